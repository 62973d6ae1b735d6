"""Operations: Ray job submission and the Prometheus/Grafana provisioning of the project's metrics."""
