from dagster import DynamicPartitionsDefinition

# One partition per tenant; sensors add a tenant the first time they see it.
tenant_partitions = DynamicPartitionsDefinition(name="tenants")
