"""Domain errors. Each carries the HTTP status and error code the API answers with."""

from __future__ import annotations

from typing import Any, ClassVar


class IaasError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidRequest(IaasError):
    status = 400
    code = "invalid_request"


class InvalidJson(InvalidRequest):
    code = "invalid_json"


class UnknownImage(InvalidRequest):
    code = "unknown_image"


class UnknownFlavor(InvalidRequest):
    code = "unknown_flavor"


class DiskTooSmall(InvalidRequest):
    code = "disk_too_small"


class InvalidPublicKey(InvalidRequest):
    code = "invalid_public_key"


class UnknownKeypair(InvalidRequest):
    code = "unknown_keypair"


class UnknownNetwork(InvalidRequest):
    code = "unknown_network"


class InvalidIp(InvalidRequest):
    """An address asked for that is no host address of its network."""

    code = "invalid_ip"


class UserDataTooLarge(InvalidRequest):
    code = "user_data_too_large"


class Unauthenticated(IaasError):
    status = 401
    code = "unauthenticated"


class Forbidden(IaasError):
    status = 403
    code = "forbidden"


class QuotaExceeded(Forbidden):
    code = "quota_exceeded"


class NotFound(IaasError):
    status = 404
    code = "not_found"


class UnknownHost(NotFound):
    code = "unknown_host"


class Conflict(IaasError):
    status = 409
    code = "conflict"


class NameTaken(Conflict):
    code = "name_taken"


class VmBusy(Conflict):
    code = "vm_busy"


class InvalidState(Conflict):
    code = "invalid_state"


class NetworkInUse(Conflict):
    code = "network_in_use"


class NetworkFull(Conflict):
    code = "network_full"


class IpInUse(Conflict):
    code = "ip_in_use"


class ServiceUnavailable(IaasError):
    status = 503
    code = "service_unavailable"


class DatabaseUnavailable(ServiceUnavailable):
    code = "database_unavailable"


class HostUnavailable(ServiceUnavailable):
    code = "host_unavailable"


class BrokerUnavailable(ServiceUnavailable):
    code = "broker_unavailable"


class StateChanged(Exception):
    """A compare-and-set UPDATE found the row in another state than expected. Not an HTTP error:
    the caller decides whether that means 409 or a lost race to stop at."""


class IdempotencyKeyReused(IaasError):
    status = 422
    code = "idempotency_key_reused"
