#!/usr/bin/env python3
"""The official Python client (`pip install kubernetes`) against a running kplane.

Usage: test_client.py KUBECONFIG

Lists namespaces, creates/reads/deletes a ConfigMap, and watches ConfigMaps with
timeout_seconds until the ADDED event of an object created after the list arrives.
Exits 0 on success, 1 on a failed check, 77 when the `kubernetes` package is missing.
"""

import sys
import uuid

try:
    from kubernetes import client, config, watch
    from kubernetes.client.rest import ApiException
except ImportError as e:  # the Rust wrapper turns this into a skip
    print(f"SKIP: the kubernetes Python package is not installed ({e}); pip install kubernetes", file=sys.stderr)
    sys.exit(77)


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def main(kubeconfig):
    api_client = config.new_client_from_config(config_file=kubeconfig)
    v1 = client.CoreV1Api(api_client)
    ns = "default"

    names = {n.metadata.name for n in v1.list_namespace().items}
    for want in ("default", "kube-system", "kube-public", "kube-node-lease"):
        check(want in names, f"namespace {want} is listed")

    name = "py-" + uuid.uuid4().hex[:8]
    body = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=name, labels={"from": "python"}),
        data={"greeting": "hello"},
    )
    created = v1.create_namespaced_config_map(ns, body)
    check(created.metadata.name == name, "create returns the object")
    check(bool(created.metadata.uid), "create sets a uid")
    check(bool(created.metadata.resource_version), "create sets a resourceVersion")

    read = v1.read_namespaced_config_map(name, ns)
    check(read.data == {"greeting": "hello"}, "read returns the data")
    check(read.metadata.uid == created.metadata.uid, "read returns the same uid")

    listed = v1.list_namespaced_config_map(ns, label_selector="from=python")
    check([c.metadata.name for c in listed.items] == [name], "label-selected list")

    # Watch from the list's resourceVersion: only later changes arrive.
    rv = listed.metadata.resource_version
    later = name + "-w"
    v1.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=later)))
    w = watch.Watch()
    seen = []
    for event in w.stream(v1.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=20):
        seen.append((event["type"], event["object"].metadata.name))
        if event["type"] == "ADDED" and event["object"].metadata.name == later:
            w.stop()
            break
    check(("ADDED", later) in seen, f"watch delivers ADDED for {later} (saw {seen})")
    check(all(n != name for _, n in seen), "the watch does not replay what the list returned")

    v1.delete_namespaced_config_map(name, ns)
    v1.delete_namespaced_config_map(later, ns)
    try:
        v1.read_namespaced_config_map(name, ns)
        check(False, "read after delete is 404")
    except ApiException as e:
        check(e.status == 404, f"read after delete is 404 (got {e.status})")

    try:
        v1.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="Bad_Name")))
        check(False, "an invalid name is refused")
    except ApiException as e:
        check(e.status == 422, f"an invalid name is 422 (got {e.status})")

    print("python client: all checks passed")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1])
