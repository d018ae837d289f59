#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: kiosk-fleet contributors. Apache-2.0.
"""Ansible module: one user of the kiosk-fleet broker's credentials file."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kiosk_mqtt_user
short_description: Keep one MQTT user in the kiosk-fleet broker's credentials file
description:
  - Ensures that O(name) has role O(role) and password O(password) in the
    credentials file of the kiosk-fleet broker (C(user:role:hash) lines, see
    the project README, "Credentials and API keys").
  - The hash is C($sha256$<salt>$<digest>), digest = SHA-256(salt || password),
    salt and digest in standard base64 without padding, as
    C(kiosk-broker passwd --generate) writes. That scheme is only safe for
    generated secrets, so passwords shorter than 24 characters are refused.
  - Idempotent - the line is rewritten only when the role differs or the
    stored hash does not verify the password. Other lines (comments, kiosks
    added by C(kiosk-gateway kiosk add), users managed by hand) are kept as
    they are. The file is replaced atomically (temporary file, fsync, rename),
    so a running broker never reads half a file.
options:
  path:
    description: The credentials file; created if missing.
    type: path
    required: true
  name:
    description: The MQTT username.
    type: str
    required: true
  role:
    description: The user's role.
    type: str
    required: true
    choices: [gateway, backend, technician, kiosk]
  password:
    description: The password, a generated secret of at least 24 characters.
    type: str
    required: true
  owner:
    description: Owner of the file.
    type: str
  group:
    description: Group of the file.
    type: str
  mode:
    description: Mode of the file.
    type: raw
    default: "0600"
author:
  - kiosk-fleet
"""

EXAMPLES = r"""
- name: Keep the gateway's own MQTT login
  kiosk_mqtt_user:
    path: /etc/kiosk-gateway/credentials
    name: gateway
    role: gateway
    password: "{{ vault_kiosk_gateway_password }}"
    owner: kiosk-gateway
    group: kiosk-gateway
  no_log: true
"""

RETURN = r"""
action:
  description: What was done to the user's line.
  returned: always
  type: str
  sample: updated
"""

import base64
import hashlib
import hmac
import os
import tempfile

from ansible.module_utils.basic import AnsibleModule

MIN_PASSWORD_LEN = 24
SALT_BYTES = 16


def b64(data):
    return base64.b64encode(data).decode("ascii").rstrip("=")


def unb64(text):
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def verifies(stored, password):
    """True when `stored` is a $sha256$ hash of `password`."""
    parts = stored.split("$")
    # "", "sha256", salt, digest
    if len(parts) != 4 or parts[0] != "" or parts[1] != "sha256":
        return False
    try:
        salt = unb64(parts[2])
        digest = unb64(parts[3])
    except ValueError:
        return False
    mine = hashlib.sha256(salt + password.encode("utf-8")).digest()
    return hmac.compare_digest(mine, digest)


def new_hash(password):
    salt = os.urandom(SALT_BYTES)
    return "$sha256$%s$%s" % (b64(salt), b64(hashlib.sha256(salt + password.encode("utf-8")).digest()))


def entry_user(raw):
    line = raw.strip()
    if not line or line.startswith("#"):
        return None
    return line.split(":", 1)[0]


def write_atomic(module, path, text):
    """Replaces `path` by a temporary file with its final owner and mode."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".credentials.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        module.set_fs_attributes_if_different(file_arguments(module, tmp), False)
        os.rename(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def file_arguments(module, path):
    return module.load_file_common_arguments(
        dict(path=path, owner=module.params["owner"], group=module.params["group"], mode=module.params["mode"])
    )


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            name=dict(type="str", required=True),
            role=dict(type="str", required=True, choices=["gateway", "backend", "technician", "kiosk"]),
            password=dict(type="str", required=True, no_log=True),
            owner=dict(type="str"),
            group=dict(type="str"),
            mode=dict(type="raw", default="0600"),
        ),
        supports_check_mode=True,
    )
    path = module.params["path"]
    name = module.params["name"]
    role = module.params["role"]
    password = module.params["password"]
    if len(password) < MIN_PASSWORD_LEN:
        module.fail_json(
            msg="password of MQTT user %s is shorter than %d characters: use a generated secret "
            "(openssl rand -base64 24), or manage this user by hand with kiosk-broker passwd" % (name, MIN_PASSWORD_LEN)
        )
    if not name or any(not (c.isascii() and (c.isalnum() or c in "._-")) for c in name):
        module.fail_json(msg="invalid MQTT username %r" % name)

    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        lines = ["# kiosk-fleet credentials: <user>:<role>:<hash>, one per line."]

    action = "unchanged"
    index = next((i for i, raw in enumerate(lines) if entry_user(raw) == name), None)
    if index is None:
        action = "added"
    else:
        fields = lines[index].strip().split(":", 2)
        if len(fields) != 3 or fields[1] != role or not verifies(fields[2], password):
            action = "updated"

    changed = action != "unchanged"
    if changed and not module.check_mode:
        line = "%s:%s:%s" % (name, role, new_hash(password))
        if index is None:
            lines.append(line)
        else:
            lines[index] = line
        try:
            write_atomic(module, path, "\n".join(lines) + "\n")
        except OSError as error:
            module.fail_json(msg="writing %s: %s" % (path, error))

    if os.path.exists(path):
        changed = module.set_fs_attributes_if_different(file_arguments(module, path), changed)
    module.exit_json(changed=changed, action=action)


if __name__ == "__main__":
    main()
