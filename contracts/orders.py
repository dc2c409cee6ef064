"""An order's lifecycle as the API reports it."""

from enum import StrEnum


class OrderStatus(StrEnum):
    RECEIVED = "received"
    EDP_PENDING = "edp_pending"
    BUILDING = "building"
    WAITING_FOR_APK = "waiting_for_apk"
    DELIVERED = "delivered"
    FAILED = "failed"
