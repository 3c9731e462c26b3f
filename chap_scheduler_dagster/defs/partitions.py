"""One partition per chap configured model; the key is chap's id as a string ("3")."""

import dagster as dg

from ..settings import get_settings

# Dynamic partition sets are instance-wide, so a second DHIS2 gets its own name.
configured_models_partitions = dg.DynamicPartitionsDefinition(
    name=get_settings().namespaced("chap_configured_models")
)
