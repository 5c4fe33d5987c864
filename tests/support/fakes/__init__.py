"""Local fakes of cloud providers that speak their real wire protocols (for the real SDKs)."""
