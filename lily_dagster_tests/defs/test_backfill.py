"""bulk_backfill in Dagster: a shard run on a real instance, the policy that keeps runs few,
and the Kubernetes Job a shard run becomes under the K8sRunLauncher."""

from __future__ import annotations

from pathlib import Path

from dagster import BackfillPolicy, MultiPartitionKey, instance_for_test, materialize

from lily_dagster.bench.estate import write_estate
from lily_dagster.defs.backfill.assets import SHARDS, bulk_backfill, bulk_backfill_job
from lily_dagster.defs.partitions import TENANTS
from lily_dagster.defs.resources import LilyResource
from lily_dagster.lib.hub.local import LocalHub
from lily_dagster_tests.support.sealed import ciphers_at


def test_each_shard_is_a_run_that_loads_its_share(lily_home: Path, tmp_path: Path) -> None:
    write_estate(tmp_path / "estate", 1_000, tenant="acme", rows_per_file=500, seed=3)
    loaded = 0
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(TENANTS, ["acme"])
        for shard in range(SHARDS):
            result = materialize(
                [bulk_backfill],
                instance=instance,
                partition_key=MultiPartitionKey({"tenant": "acme", "shard": str(shard)}),
                resources={"lily": LilyResource()},
                run_config={
                    "ops": {"bulk_backfill": {"config": {"source": str(tmp_path / "estate")}}}
                },
            )
            assert result.success
            (mat,) = result.asset_materializations_for_node("bulk_backfill")
            assert mat.metadata["rows_read"].value == 1_000
            loaded += int(mat.metadata["rows_in_shard"].value)  # type: ignore[arg-type]
    assert loaded == 1_000
    hub = LocalHub(lily_home / "hub", ciphers=ciphers_at(lily_home))
    assert len(list(hub.export("acme"))) >= 1_000
    policy = bulk_backfill.backfill_policy
    assert policy == BackfillPolicy.multi_run(max_partitions_per_run=1)


def test_a_shard_run_renders_as_a_kubernetes_job_with_its_resources() -> None:
    from dagster_k8s.job import (
        DagsterK8sJobConfig,
        construct_dagster_k8s_job,
        get_user_defined_k8s_config,
    )

    tags = dict(bulk_backfill_job.tags)
    tags["dagster/partition"] = "acme|2"
    config = DagsterK8sJobConfig(
        job_image="registry.example.com/lily:1.0",
        dagster_home="/opt/dagster/dagster_home",
        image_pull_policy="IfNotPresent",
        image_pull_secrets=[],
        service_account_name=None,
        instance_config_map="dagster-instance",
        postgres_password_secret="dagster-postgresql-secret",
        env_config_maps=["lily-config"],
        env_secrets=["lily-atlan"],
        env_vars=[],
        volume_mounts=[],
        volumes=[],
        labels={},
        resources={},
        scheduler_name=None,
        security_context={},
    )
    job = construct_dagster_k8s_job(
        config,
        args=["dagster", "api", "execute_run", "{}"],
        job_name="dagster-run-acme-shard-2",
        user_defined_k8s_config=get_user_defined_k8s_config(tags),
        labels={"dagster/partition": "acme-2"},
    ).to_dict()
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example.com/lily:1.0"
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
    assert container["resources"]["requests"] == {"cpu": "2", "memory": "3Gi"}
    assert pod["restart_policy"] == "Never"
    sources = [s["secret_ref"]["name"] for s in container["env_from"] if s.get("secret_ref")]
    assert "lily-atlan" in sources
