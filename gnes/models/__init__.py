"""Named models served side by side: the plugin convention, the controller, keyterms, evaluation."""
