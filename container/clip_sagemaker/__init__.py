"""OpenCLIP served behind the SageMaker inference container contract."""
