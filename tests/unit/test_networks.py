"""What a network's CIDR may be (common/networks.parse_cidr): IPv4, /16 to /29, written one way, by its
network address; every refusal is a 400 naming the field `cidr`."""

from __future__ import annotations

import ipaddress

import pytest

from common.errors import InvalidRequest
from common.networks import MAX_PREFIX, MIN_PREFIX, as_id, looks_like_id, parse_cidr, usable_addresses


@pytest.mark.parametrize("text", ["198.51.100.0/24", "10.0.0.0/16", "203.0.113.8/29", "192.0.2.128/25"])
def test_a_network_by_its_network_address_is_taken(text: str) -> None:
    assert parse_cidr(text) == ipaddress.IPv4Network(text)


def refusal(text: str) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as refused:
        parse_cidr(text)
    error = refused.value
    assert error.code == "invalid_request" and error.status == 400
    assert error.details["fields"] == [{"field": "cidr", "message": error.message}]
    return error


def test_host_bits_set_names_the_network_to_use() -> None:
    error = refusal("198.51.100.7/24")
    assert "198.51.100.0/24" in error.message and error.details["network"] == "198.51.100.0/24"


@pytest.mark.parametrize("text", ["10.0.0.0/15", "0.0.0.0/0", "10.0.0.0/8"])
def test_too_large_a_network_is_refused(text: str) -> None:
    error = refusal(text)
    assert "too large" in error.message and error.details["min_prefix"] == MIN_PREFIX


@pytest.mark.parametrize("text", ["198.51.100.0/30", "198.51.100.4/31", "198.51.100.1/32"])
def test_too_small_a_network_is_refused(text: str) -> None:
    error = refusal(text)
    assert "too small" in error.message and error.details["max_prefix"] == MAX_PREFIX


@pytest.mark.parametrize("text", ["2001:db8::/64", "::/0", "::ffff:198.51.100.0/120"])
def test_ipv6_is_refused_as_such(text: str) -> None:
    assert "IPv6" in refusal(text).message


@pytest.mark.parametrize(
    "text",
    [
        "", "198.51.100.0", "198.51.100.0/", "/24", "198.51.100/24", "198.51.100.0.0/24", "256.0.0.0/24",
        "198.051.100.0/24", "198.51.100.0/255.255.255.0", "198.51.100.0/0.0.0.255", " 198.51.100.0/24",
        "198.51.100.0/24 ", "198.51.100.0/024", "١٩٨.51.100.0/24", "198.51.100.0/24\x00", "banana",
    ],
)  # fmt: skip
def test_anything_else_is_refused(text: str) -> None:
    refusal(text)


def test_every_address_but_the_network_and_broadcast_is_usable() -> None:
    assert usable_addresses(24) == 254 and usable_addresses(29) == 6 and usable_addresses(16) == 65534


def test_a_reference_is_an_id_only_when_shaped_as_the_api_writes_ids() -> None:
    assert looks_like_id("0b6f1d2e-9c1a-4f57-8d43-2f5f6f1c2a10")
    assert as_id("0b6f1d2e-9c1a-4f57-8d43-2f5f6f1c2a10") is not None
    for name in ("backend", "0b6f1d2e9c1a4f578d432f5f6f1c2a10", "0B6F1D2E-9C1A-4F57-8D43-2F5F6F1C2A10"):
        assert not looks_like_id(name) and as_id(name) is None
