"""The NoCloud seed's files, read back the way cloud-init reads them: YAML (PyYAML, as cloud-init
uses) and MIME (Python's `email`, as cloud-init uses)."""

from __future__ import annotations

import email
from email.message import Message

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from worker.seed import SeedInterface, SeedSpec, seed_files
from worker.seed.user_data import USER_CONFIG_MERGE, content_type
from worker.seed.yaml_text import yaml_text

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKxMZgE3pzJ3pdT6jv1p5x6e+H4/Hw3z5ZvvX2aM+xyz alice@laptop"
OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ0mPvrj6TL1d3Ah8nVv8uXqk8z7o5bH0Fj6cDm2wQkz bob — ünïcode"
NICS = (
    SeedInterface("eth0", "52:54:00:12:34:56", "198.51.100.7/24"),
    SeedInterface("eth1", "52:54:00:AB:CD:EF", "203.0.113.9/28"),
)


def spec(keys: tuple[str, ...] = (KEY,), user: str | None = None) -> SeedSpec:
    return SeedSpec("0b9d6c3e-vm", "web-1", NICS, keys, user)


def parts(user_data: bytes) -> list[Message]:
    message = email.message_from_bytes(user_data)  # the default (compat32) policy, as cloud-init reads
    assert message.get_content_type() == "multipart/mixed"
    found = message.get_payload()
    assert isinstance(found, list)
    return found


def payload(part: Message) -> bytes:
    data = part.get_payload(decode=True)
    assert isinstance(data, bytes)
    return data


def test_the_seed_has_the_three_files_nocloud_reads() -> None:
    assert set(seed_files(spec())) == {"meta-data", "user-data", "network-config"}


def test_meta_data_names_the_instance_and_its_hostname() -> None:
    meta = yaml.safe_load(seed_files(spec())["meta-data"])
    assert meta == {"instance-id": "0b9d6c3e-vm", "local-hostname": "web-1"}


def test_network_config_is_version_2_static_addresses_matched_by_mac() -> None:
    config = yaml.safe_load(seed_files(spec())["network-config"])
    assert config == {
        "version": 2,
        "ethernets": {
            "eth0": {
                "match": {"macaddress": "52:54:00:12:34:56"},
                "set-name": "eth0",
                "addresses": ["198.51.100.7/24"],
                "dhcp4": False,
                "dhcp6": False,
            },
            "eth1": {
                "match": {"macaddress": "52:54:00:ab:cd:ef"},  # as the kernel shows it
                "set-name": "eth1",
                "addresses": ["203.0.113.9/28"],
                "dhcp4": False,
                "dhcp6": False,
            },
        },
    }


def test_no_keys_and_no_user_data_make_an_empty_user_data() -> None:
    assert seed_files(spec(keys=()))["user-data"] == b""


def test_the_keys_travel_in_a_cloud_config_part() -> None:
    (part,) = parts(seed_files(spec(keys=(KEY, OTHER_KEY)))["user-data"])
    assert part.get_content_type() == "text/cloud-config"
    text = payload(part).decode()
    assert text.startswith("#cloud-config\n")
    assert yaml.safe_load(text) == {"ssh_authorized_keys": [KEY, OTHER_KEY]}


@pytest.mark.parametrize(
    "user",
    [
        "#!/bin/sh\necho 'grüße, 世界 🚀'\n",
        "#!/bin/sh\r\necho crlf\r\n",
        "#!/bin/sh\necho no final newline",
        "#cloud-config\nruncmd: [[touch, /x]]\n\n\n",
        "plain text that cloud-init will not act on\x00\x7f",
        "",
    ],
)
def test_the_users_bytes_come_back_exactly(user: str) -> None:
    keys_part, user_part = parts(seed_files(spec(user=user))["user-data"])
    assert keys_part.get_content_type() == "text/cloud-config"
    assert user_part.get_filename() == "user-data"
    assert payload(user_part) == user.encode()


def test_user_data_without_keys_is_the_only_part() -> None:
    (part,) = parts(seed_files(spec(keys=(), user="#!/bin/sh\ntrue\n"))["user-data"])
    assert payload(part) == b"#!/bin/sh\ntrue\n"


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        ("#!/bin/bash\n", "text/x-shellscript"),
        ("#cloud-config\n", "text/cloud-config"),
        ("  \n#Cloud-Config\n", "text/cloud-config"),  # cloud-init compares after lstrip(), lower case
        ("#cloud-config-archive\n", "text/cloud-config-archive"),  # the longest start wins
        ("#cloud-config-jsonp\n", "text/cloud-config-jsonp"),
        ("#cloud-boothook\n", "text/cloud-boothook"),
        ("#include\n", "text/x-include-url"),
        ("#include-once\n", "text/x-include-once-url"),
        ("#part-handler\n", "text/part-handler"),
        ("## template: jinja\n", "text/jinja2"),
        ("echo hello\n", "text/plain"),
        ("", "text/plain"),
    ],
)
def test_the_users_part_is_typed_as_cloud_init_types_it(start: str, expected: str) -> None:
    assert content_type(start) == expected
    _, user_part = parts(seed_files(spec(user=start))["user-data"])
    assert user_part.get_content_type() == expected


def test_a_users_cloud_config_appends_to_the_lists_before_it() -> None:
    _, user_part = parts(seed_files(spec(user="#cloud-config\nssh_authorized_keys: [x]\n"))["user-data"])
    assert user_part["Merge-Type"] == USER_CONFIG_MERGE
    _, script = parts(seed_files(spec(user="#!/bin/sh\n"))["user-data"])
    assert script["Merge-Type"] is None


def test_the_same_spec_gives_the_same_files() -> None:
    assert seed_files(spec(user="#!/bin/sh\n")) == seed_files(spec(user="#!/bin/sh\n"))


@given(st.dictionaries(st.text(), st.lists(st.text()) | st.text() | st.booleans() | st.integers()))
def test_yaml_text_loads_back_with_pyyaml(document: dict[str, object]) -> None:
    assert yaml.safe_load(yaml_text(document)) == document
