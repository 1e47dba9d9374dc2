"""The search page in a real browser: Debian's chromium, headless, driven by selenium."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from gnes.proto import pb
from tests.conftest import free_ports
from tests.ops_app import make_app, serve

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def _index(port: int) -> None:
    from gnes.client import GnesClient

    with GnesClient(port=port, timeout=30) as client:
        config = json.dumps({"dim": 64, "metric": "ip", "index_type": "flat"})
        client.admin(pb.Request.AdminRequest.CREATE, index_name="news", config_json=config)
        docs = ["bushfires near sydney burn homes", "a quiet day at the beach", "bushfires spread north"]
        assert client.index(docs, start_id=1).errors == []
        request = pb.Request(request_id=99)
        request.index.index_name = "news"
        for i, text in enumerate(["bushfires near sydney: the news", "markets fall"], 50):
            request.index.docs.add(doc_id=i, raw_text=text, meta_json=json.dumps({"source": "wire", "n": i}))
        assert [r.index.num_docs for r in client.stream([request])] == [2]


def test_search_page_in_chromium(hash_pipeline, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # Never skipped: without a browser the page is untested, and that is a failure.
    assert CHROMIUM and DRIVER, "needs Debian's chromium and chromium-driver: run scripts/setup.sh as root"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    _index(hash_pipeline.grpc_port)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1100,900",
    ):
        options.add_argument(flag)
    with serve(make_app(hash_pipeline.ports), free_ports(1)[0]) as url:
        driver = webdriver.Chrome(options=options, service=Service(DRIVER))
        try:
            driver.get(url + "/")
            wait = WebDriverWait(driver, 20)
            # the index choice is filled from /indexes (LIST through the pipeline)
            wait.until(
                lambda d: "news" in [o.get_attribute("value") for o in Select(d.find_element(By.ID, "index")).options]
            )
            box = driver.find_element(By.ID, "q")
            box.send_keys("bushfires near sydney burn homes")  # a document's own text: the hash encoder is not semantic
            driver.find_element(By.ID, "go").click()
            wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "li.hit")))
            hits = driver.find_elements(By.CSS_SELECTOR, "li.hit")
            assert [h.get_attribute("data-id") for h in hits][:1] == ["1"]
            scores = [float(h.find_element(By.CSS_SELECTOR, ".score").text) for h in hits]
            assert scores == sorted(scores, reverse=True) and len(hits) == 3
            assert "result(s)" in driver.find_element(By.ID, "state").text
            Select(driver.find_element(By.ID, "index")).select_by_value("news")
            box.clear()
            box.send_keys("bushfires near sydney: the news")
            driver.find_element(By.ID, "go").click()
            # read in the page itself: the list is replaced while the answer comes in
            first_id = "const h = document.querySelector('li.hit'); return h && h.dataset.id;"
            wait.until(lambda d: d.execute_script(first_id) == "50")
            first = driver.find_elements(By.CSS_SELECTOR, "li.hit")[0]
            assert json.loads(first.find_element(By.CSS_SELECTOR, ".meta").text) == {"source": "wire", "n": 50}
            shot = tmp_path / "search-page.png"
            assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 1000
        finally:
            driver.quit()
