"""Public test tools: the layer conformance suite, communicators, fixtures."""
