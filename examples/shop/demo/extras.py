"""Chapter 4 of the story: a feature flag moving with a canary, and a breaking API contract
held before its canary starts. Both are the demo's own objects (the shop's code reads no
flag yet, and its manifests declare no contract): what they show is the operator's part.

- Flag: FeatureFlag ``express-checkout`` (0% on), listed by catalog; catalog v2 is released
  with ``setWeight 50 → setFlag on 50% → analysis``: the rendered flagd file
  (ConfigMap ``catalog-flags``) moves with the canary and stays at 50% once promoted.
- Contract: payments declares its API (OpenAPI, inline) and orders declares what it reads of
  it (``authorize`` → ``authorization_id``). Payments v4 renames that field: the release is
  held with ``ContractCompatible=False`` naming orders, no canary pod starts; the team
  reverts to v2's spec.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from typing import Any

import yaml
from examples.shop.demo.shop import Shop, TimedOut
from examples.shop.demo.timeline import short

from pilotboat.adapters.kube import Kube

__all__ = ["available", "contract_blocks_breaking_provider", "flag_moves_with_canary"]

FLAG = "express-checkout"


def available(kube: Kube) -> tuple[bool, bool]:
    """Whether the cluster serves FeatureFlags, and whether Microservices carry contracts."""
    flags = kube.get("CustomResourceDefinition", None, "featureflags.pilotboat.dev") is not None
    crd = kube.get("CustomResourceDefinition", None, "microservices.pilotboat.dev") or {}
    props = (((crd.get("spec") or {}).get("versions") or [{}])[0].get("schema") or {})
    spec = ((props.get("openAPIV3Schema") or {}).get("properties") or {}).get("spec") or {}
    return flags, "api" in (spec.get("properties") or {})


def _flag_split(kube: Kube, namespace: str) -> str:
    cm = kube.get("ConfigMap", namespace, "catalog-flags") or {}
    text = (cm.get("data") or {}).get("flags.json")
    if not text:
        return "not rendered"
    flag = json.loads(text)["flags"].get(FLAG) or {}
    buckets = (flag.get("targeting") or {}).get("fractional") or []
    return ", ".join(f"{v} {p}%" for v, p in buckets) or "no split"


def flag_moves_with_canary(shop: Shop, say: Callable[[str], None],
                           analysis: dict[str, Any]) -> tuple[bool, str]:
    kube, ns = shop.kube, shop.namespace
    kube.apply({"apiVersion": "pilotboat.dev/v1alpha1", "kind": "FeatureFlag",
                "metadata": {"name": FLAG, "namespace": ns},
                "spec": {"variants": {"on": True, "off": False}, "defaultVariant": "off",
                         "targeting": {"fractional": [["on", 0], ["off", 100]]}}})
    ms = copy.deepcopy(shop.desired["catalog"])
    ms["spec"]["flags"] = [FLAG]
    ms["spec"]["rollout"] = {"canary": {
        "steps": [{"setWeight": 50},
                  {"setFlag": {"flag": FLAG, "variants": {"on": 50, "off": 50}}},
                  {"analysis": {"intervals": 2}}],
        "analysis": copy.deepcopy(analysis)}}
    ms["spec"]["version"] = "v2"
    shop.desired["catalog"] = ms
    kube.apply(ms)
    say(f"released catalog v2 with FeatureFlag {FLAG} (0% on): setWeight 50 → setFlag on 50% "
        "→ analysis")
    seen: list[str] = []
    deadline = time.monotonic() + 300
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        split = _flag_split(kube, ns)
        status = shop.status("catalog")
        if not seen or seen[-1] != split:
            seen.append(split)
            say(f"  catalog-flags ({status.get('phase')}, weight "
                f"{status.get('canaryWeight') or 0}%): {FLAG}: {split}")
        if status.get("phase") == "Healthy" and status.get("stableVersion") == "v2":
            break
        if status.get("phase") == "Degraded":
            return False, f"catalog v2 rolled back: {short(status.get('message'))}"
        time.sleep(0.5)
    else:
        return False, f"catalog v2 not promoted: {short(status.get('message'))}"
    final = _flag_split(kube, ns)
    ok = "on 50%" in final and any("on 0%" in s for s in seen)
    return ok, f"the flag moved with the canary ({' → '.join(seen)}) and stays at {final} " \
               "after promotion"


PAYMENTS_API = """
openapi: 3.0.3
info: {title: payments, version: "2"}
paths:
  /authorizations:
    post:
      operationId: authorize
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              required: [order_id, amount_cents]
              properties:
                order_id: {type: string}
                amount_cents: {type: integer}
      responses:
        "201":
          description: authorized
          content:
            application/json:
              schema:
                type: object
                properties:
                  authorization_id: {type: string}
                  status: {type: string}
"""


def contract_blocks_breaking_provider(shop: Shop, say: Callable[[str], None]
                                      ) -> tuple[bool, str]:
    kube, ns = shop.kube, shop.namespace
    good = yaml.safe_load(PAYMENTS_API)
    orders = copy.deepcopy(shop.desired["orders"])
    orders["spec"]["api"] = {"consumes": [{"service": "payments", "operations": ["authorize"],
                                           "responseFields": ["authorization_id"]}]}
    shop.desired["orders"] = orders
    kube.apply(orders)  # not in the pod template: no release
    before = copy.deepcopy(shop.desired["payments"])
    declared = copy.deepcopy(before)
    declared["spec"]["api"] = {"openapi": {"inline": yaml.safe_dump(good)}}
    kube.apply(declared)
    say("orders declares it reads authorization_id from payments' authorize; payments "
        "declares its OpenAPI")
    breaking = copy.deepcopy(good)
    props = breaking["paths"]["/authorizations"]["post"]["responses"]["201"]["content"][
        "application/json"]["schema"]["properties"]
    props["id"] = props.pop("authorization_id")
    v4 = copy.deepcopy(declared)
    v4["spec"]["version"] = "v4"
    v4["spec"]["api"] = {"openapi": {"inline": yaml.safe_dump(breaking)}}
    kube.apply(v4)
    say("released payments v4, whose API renames authorization_id to id")
    try:
        status = shop.wait("payments", "held by its contract", lambda s: any(
            c.get("type") == "ContractCompatible" and c.get("status") == "False"
            for c in s.get("conditions") or []), timeout=60)
    except TimedOut as exc:
        shop.desired["payments"] = declared
        kube.apply(declared)
        return False, str(exc)
    cond = next(c for c in status.get("conditions") or [] if c.get("type") == "ContractCompatible")
    say(f"  payments: ContractCompatible=False — {short(cond.get('message'), 170)}")
    time.sleep(5)  # had the gate let it through, the canary would exist by now
    canary = kube.get("Deployment", ns, "payments-canary")
    held = canary is None or not (canary.get("spec") or {}).get("replicas")
    shop.desired["payments"] = declared
    kube.apply(declared)  # the team reverts v4 in Git
    shop.wait("payments", "Healthy at v2 again", lambda s: s.get("phase") == "Healthy"
              and s.get("stableVersion") == "v2", timeout=60)
    say("payments v4 reverted in Git: Healthy, stable v2")
    ok = held and "orders" in (cond.get("message") or "")
    return ok, ("payments v4 held before its canary: its contract breaks what orders reads "
                f"(canary pods started: {'none' if held else 'some'}); reverted to v2")
