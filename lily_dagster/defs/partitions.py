from dagster import DynamicPartitionsDefinition

# One partition per tenant; sensors add a tenant the first time they see it.
TENANTS = "tenants"
tenant_partitions = DynamicPartitionsDefinition(name=TENANTS)
