"""The flatcar Butane input types (1.0.0 and 1.1.0) and Ignition 3.3/3.4 output key order.

Butane reads YAML into typed structs: a key that is not a field is an "unused key", a value of
the wrong YAML kind is an unmarshal error. The tables here drive both the YAML reader
(parse.py) and the generic snake_case -> camelCase translation (translate.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

STR = "string"
INT = "int"
BOOL = "bool"

V1_0 = (1, 0)
V1_1 = (1, 1)


@dataclass(frozen=True)
class ListOf:
    item: Type


@dataclass(frozen=True)
class Field:
    key: str
    type: Type
    # Ignition key, or None when the field is consumed by a custom translation step.
    json: str | None = ""
    since: tuple[int, int] = V1_0

    @property
    def json_key(self) -> str | None:
        if self.json is None:
            return None
        if self.json:
            return self.json
        head, *rest = self.key.split("_")
        return head + "".join(part.capitalize() for part in rest)


@dataclass(frozen=True)
class Obj:
    name: str
    fields: tuple[Field, ...]

    def field(self, key: str, version: tuple[int, int]) -> Field | None:
        for f in self.fields:
            if f.key == key and version >= f.since:
                return f
        return None


Type = Union[str, ListOf, Obj]  # noqa: UP007 - used at runtime in a recursive alias

STRS = ListOf(STR)

VERIFICATION = Obj("Verification", (Field("hash", STR),))
HTTP_HEADER = Obj("HTTPHeader", (Field("name", STR), Field("value", STR)))
RESOURCE = Obj(
    "Resource",
    (
        Field("compression", STR),
        Field("http_headers", ListOf(HTTP_HEADER)),
        Field("source", STR),
        Field("inline", STR, None),
        Field("local", STR, None),
        Field("verification", VERIFICATION),
    ),
)
IGNITION = Obj(
    "Ignition",
    (
        Field(
            "config",
            Obj("IgnitionConfig", (Field("merge", ListOf(RESOURCE)), Field("replace", RESOURCE))),
        ),
        Field(
            "proxy",
            Obj(
                "Proxy",
                (Field("http_proxy", STR), Field("https_proxy", STR), Field("no_proxy", STRS)),
            ),
        ),
        Field(
            "security",
            Obj(
                "Security",
                (
                    Field(
                        "tls",
                        Obj("TLS", (Field("certificate_authorities", ListOf(RESOURCE)),)),
                    ),
                ),
            ),
        ),
        Field(
            "timeouts",
            Obj("Timeouts", (Field("http_response_headers", INT), Field("http_total", INT))),
        ),
    ),
)
NODE_OWNER = (Field("id", INT), Field("name", STR))
NODE_FIELDS = (
    Field("path", STR),
    Field("overwrite", BOOL),
    Field("user", Obj("NodeUser", NODE_OWNER)),
    Field("group", Obj("NodeGroup", NODE_OWNER)),
)
FILE = Obj(
    "File",
    NODE_FIELDS
    + (Field("contents", RESOURCE), Field("append", ListOf(RESOURCE)), Field("mode", INT)),
)
DIRECTORY = Obj("Directory", NODE_FIELDS + (Field("mode", INT),))
LINK = Obj("Link", NODE_FIELDS + (Field("target", STR), Field("hard", BOOL)))
PARTITION = Obj(
    "Partition",
    (
        Field("label", STR),
        Field("number", INT),
        Field("size_mib", INT, "sizeMiB"),
        Field("start_mib", INT, "startMiB"),
        Field("type_guid", STR, "typeGuid"),
        Field("guid", STR),
        Field("wipe_partition_entry", BOOL),
        Field("should_exist", BOOL),
        Field("resize", BOOL),
    ),
)
DISK = Obj(
    "Disk",
    (Field("device", STR), Field("wipe_table", BOOL), Field("partitions", ListOf(PARTITION))),
)
RAID = Obj(
    "Raid",
    (
        Field("name", STR),
        Field("level", STR),
        Field("devices", STRS),
        Field("spares", INT),
        Field("options", STRS),
    ),
)
FILESYSTEM = Obj(
    "Filesystem",
    (
        Field("device", STR),
        Field("format", STR),
        Field("path", STR),
        Field("wipe_filesystem", BOOL),
        Field("label", STR),
        Field("uuid", STR),
        Field("options", STRS),
        Field("mount_options", STRS),
        Field("with_mount_unit", BOOL, None),
    ),
)
LUKS = Obj(
    "Luks",
    (
        Field("name", STR),
        Field("device", STR),
        Field("key_file", RESOURCE),
        Field("label", STR),
        Field("uuid", STR),
        Field("options", STRS),
        Field("discard", BOOL, since=V1_1),
        Field("open_options", STRS, since=V1_1),
        Field("wipe_volume", BOOL),
    ),
)
TREE = Obj("Tree", (Field("local", STR, None), Field("path", STR, None)))
STORAGE = Obj(
    "Storage",
    (
        Field("disks", ListOf(DISK)),
        Field("raid", ListOf(RAID)),
        Field("filesystems", ListOf(FILESYSTEM)),
        Field("files", ListOf(FILE)),
        Field("directories", ListOf(DIRECTORY)),
        Field("links", ListOf(LINK)),
        Field("luks", ListOf(LUKS)),
        Field("trees", ListOf(TREE), None),
    ),
)
DROPIN = Obj(
    "Dropin",
    (Field("name", STR), Field("contents", STR), Field("contents_local", STR, None, V1_1)),
)
UNIT = Obj(
    "Unit",
    (
        Field("name", STR),
        Field("enabled", BOOL),
        Field("mask", BOOL),
        Field("contents", STR),
        Field("contents_local", STR, None, V1_1),
        Field("dropins", ListOf(DROPIN)),
    ),
)
PASSWD_USER = Obj(
    "PasswdUser",
    (
        Field("name", STR),
        Field("password_hash", STR),
        Field("ssh_authorized_keys", STRS),
        Field("ssh_authorized_keys_local", STRS, None, V1_1),
        Field("uid", INT),
        Field("gecos", STR),
        Field("home_dir", STR),
        Field("no_create_home", BOOL),
        Field("primary_group", STR),
        Field("groups", STRS),
        Field("no_user_group", BOOL),
        Field("no_log_init", BOOL),
        Field("shell", STR),
        Field("should_exist", BOOL),
        Field("system", BOOL),
    ),
)
PASSWD_GROUP = Obj(
    "PasswdGroup",
    (
        Field("name", STR),
        Field("gid", INT),
        Field("password_hash", STR),
        Field("should_exist", BOOL),
        Field("system", BOOL),
    ),
)
CONFIG = Obj(
    "Config",
    (
        Field("variant", STR, None),
        Field("version", STR, None),
        Field("ignition", IGNITION),
        Field("storage", STORAGE),
        Field("systemd", Obj("Systemd", (Field("units", ListOf(UNIT)),))),
        Field(
            "passwd",
            Obj(
                "Passwd",
                (Field("users", ListOf(PASSWD_USER)), Field("groups", ListOf(PASSWD_GROUP))),
            ),
        ),
        Field(
            "kernel_arguments",
            Obj("KernelArguments", (Field("should_exist", STRS), Field("should_not_exist", STRS))),
        ),
    ),
)

# Ignition output: for every object type, its keys in Go struct order (which is how Butane's
# encoder writes them), the type of each child object, and whether the key is written even
# when empty (Go fields without omitempty). Node-based types list the embedded Node fields
# first, then their own fields, exactly like the Go structs embed them.


@dataclass(frozen=True)
class Out:
    key: str
    child: str | None = None  # name of the child object type (for objects and lists of them)
    always: bool = False  # no omitempty: written even when empty
    omit_zero: bool = False  # non-pointer scalar with omitempty: 0 / "" is dropped


_RES = "Resource"
_NODE = (
    Out("group", "NodeOwner"),
    Out("overwrite"),
    Out("path", always=True),
    Out("user", "NodeOwner"),
)
IGNITION_TYPES: dict[str, tuple[Out, ...]] = {
    "Config": (
        Out("ignition", "Ignition", always=True),
        Out("kernelArguments", "Plain"),
        Out("passwd", "Passwd"),
        Out("storage", "Storage"),
        Out("systemd", "Systemd"),
    ),
    "Ignition": (
        Out("config", "IgnitionConfig"),
        Out("proxy", "Plain"),
        Out("security", "Security"),
        Out("timeouts", "Plain"),
        Out("version", always=True),
    ),
    "IgnitionConfig": (Out("merge", _RES), Out("replace", _RES)),
    "Security": (Out("tls", "TLS"),),
    "TLS": (Out("certificateAuthorities", _RES),),
    "Resource": (
        Out("compression"),
        Out("httpHeaders", "HTTPHeader"),
        Out("source"),
        Out("verification", "Plain"),
    ),
    "HTTPHeader": (Out("name", always=True), Out("value")),
    "NodeOwner": (Out("id"), Out("name")),
    "Passwd": (Out("groups", "PasswdGroup"), Out("users", "PasswdUser")),
    "PasswdGroup": (
        Out("gid"),
        Out("name", always=True),
        Out("passwordHash"),
        Out("shouldExist"),
        Out("system"),
    ),
    "PasswdUser": (
        Out("gecos"),
        Out("groups"),
        Out("homeDir"),
        Out("name", always=True),
        Out("noCreateHome"),
        Out("noLogInit"),
        Out("noUserGroup"),
        Out("passwordHash"),
        Out("primaryGroup"),
        Out("shouldExist"),
        Out("sshAuthorizedKeys"),
        Out("shell"),
        Out("system"),
        Out("uid"),
    ),
    "Storage": (
        Out("directories", "Directory"),
        Out("disks", "Disk"),
        Out("files", "File"),
        Out("filesystems", "Filesystem"),
        Out("links", "Link"),
        Out("luks", "Luks"),
        Out("raid", "Raid"),
    ),
    "Directory": _NODE + (Out("mode"),),
    "File": _NODE + (Out("append", _RES), Out("contents", _RES), Out("mode")),
    "Link": _NODE + (Out("hard"), Out("target")),
    "Disk": (Out("device", always=True), Out("partitions", "Partition"), Out("wipeTable")),
    "Partition": (
        Out("guid"),
        Out("label"),
        Out("number", omit_zero=True),
        Out("resize"),
        Out("shouldExist"),
        Out("sizeMiB"),
        Out("startMiB"),
        Out("typeGuid"),
        Out("wipePartitionEntry"),
    ),
    "Filesystem": (
        Out("device", always=True),
        Out("format"),
        Out("label"),
        Out("mountOptions"),
        Out("options"),
        Out("path"),
        Out("uuid"),
        Out("wipeFilesystem"),
    ),
    "Luks": (
        Out("clevis", "Plain"),
        Out("device"),
        Out("discard"),
        Out("keyFile", _RES),
        Out("label"),
        Out("name", always=True),
        Out("openOptions"),
        Out("options"),
        Out("uuid"),
        Out("wipeVolume"),
    ),
    "Raid": (
        Out("devices"),
        Out("level"),
        Out("name", always=True),
        Out("options"),
        Out("spares"),
    ),
    "Systemd": (Out("units", "Unit"),),
    "Unit": (
        Out("contents"),
        Out("dropins", "Dropin"),
        Out("enabled"),
        Out("mask"),
        Out("name", always=True),
    ),
    "Dropin": (Out("contents"), Out("name", always=True)),
}
