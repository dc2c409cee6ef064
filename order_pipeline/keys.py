"""Every order is one partition (key = cfg_id) of one dynamic partitions definition; its runs are\nselections of the order's assets, tagged so the run queue and the sensors can tell them apart."""

from dagster import AssetKey, DynamicPartitionsDefinition

ORDERS_PARTITIONS = "orders"
orders_partitions = DynamicPartitionsDefinition(name=ORDERS_PARTITIONS)

ORDER_PREFIX = "order"
CONFIG = AssetKey([ORDER_PREFIX, "config"])
EDP_ARTIFACTS = AssetKey([ORDER_PREFIX, "edp_artifacts"])
CFN_OR_ISO = AssetKey([ORDER_PREFIX, "cfn_or_iso"])
APK = AssetKey([ORDER_PREFIX, "apk"])
MANIFEST = AssetKey([ORDER_PREFIX, "manifest"])
EMAIL = AssetKey([ORDER_PREFIX, "email"])

# What a finished EDP job sets going, and what a newly landed APK sets going for a waiting order.
AFTER_EDP = [EDP_ARTIFACTS, CFN_OR_ISO, APK, MANIFEST, EMAIL]
AFTER_APK = [APK, MANIFEST, EMAIL]
REDELIVERY = [MANIFEST, EMAIL]
EVERY_STEP = [CONFIG, *AFTER_EDP]


def first_run_selection(edp_wait_in_run_seconds: float) -> list[AssetKey]:
    """What an order's first run materializes: the whole order when ``order/edp_artifacts`` may
    wait for EDP inside the run (one run per order), else ``order/config`` alone, and ``edp_sensor``
    starts the rest once EDP is done (EDP taking hours, as on beta)."""
    return list(EVERY_STEP) if edp_wait_in_run_seconds > 0 else [CONFIG]


# An operator's job on one order's portal (Launchpad, partition = cfg_id); its failure is the
# operator's to read, never the order's.
YANK_JOB = "yank_portal_version"
OPERATOR_JOBS = frozenset({YANK_JOB})

EDP_SUBMIT_TAG = "platform/edp"
# The run queue caps how many runs submit EDP jobs at once by this tag.
FIRST_RUN_TAGS = {EDP_SUBMIT_TAG: "submit"}


def first_run_key(cfg_id: str) -> str:
    """The run key of an order's first run: it never repeats, so a restarted daemon or a second
    starter (the API and ``order_sensor``) does not submit twice."""
    return f"config:{cfg_id}"
