"""The routes, as Flask blueprints over one Pipeline: health and model information, inference
(/invocations), and the earlier systems' routes."""
