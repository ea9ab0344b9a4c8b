"""Certificates and TLS policies through the REST API: private keys are write-only, reads
show what a certificate holds, and bad certificates or policies are refused with nothing
changed."""

from __future__ import annotations

import datetime
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.support.pki import KeyPair, TestCa, utc_now
from tests.unit.admin_harness import (
    YAML,
    Api,
    assert_problem,
    listener,
    new_store,
    reason_at,
    running_api,
)

DAY = datetime.timedelta(days=1)


@pytest.fixture(params=["memory", "sqlite"])
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(new_store(request.param, tmp_path)) as running:
        yield running


@pytest.fixture(scope="module")
def ca() -> TestCa:
    return TestCa()


@pytest.fixture(scope="module")
def pair(ca: TestCa) -> KeyPair:
    return ca.issue("shop.example.com", "www.example.com")


def policy(name: str = "edge", **spec: Any) -> dict[str, Any]:
    return {
        "kind": "TlsPolicy",
        "name": name,
        "spec": spec
        or {"downstream": {"certificates": ["shop"], "client_certificate": {"ca": "clients"}}},
    }


def assert_no_key(text: str, *pairs: KeyPair) -> None:
    assert "PRIVATE KEY" not in text
    for key_pair in pairs:
        for fragment in key_pair.key_fragments():
            assert fragment not in text


def fingerprint(pem: str) -> str:
    digest = x509.load_pem_x509_certificate(pem.encode()).fingerprint(hashes.SHA256()).hex()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2)).upper()


async def test_a_private_key_is_stored_but_never_shown(api: Api, ca: TestCa, pair: KeyPair) -> None:
    seen: list[str] = []

    async def record(response: httpx.Response) -> httpx.Response:
        seen.append(response.text)
        return response

    created = await record(await api.put("certificates/shop", pair.document("shop")))
    assert created.status_code == 201, created.text
    body = created.json()
    assert "private_key" not in body["spec"]
    assert body["spec"]["certificate"] == pair.chain
    info = body["info"]
    assert (info["form"], info["source"], info["error"]) == ("key_pair", "inline", None)
    (leaf,) = info["certificates"]
    assert leaf["subject"].startswith("CN=shop.example.com,")
    assert leaf["subject_alt_names"] == ["DNS:shop.example.com", "DNS:www.example.com"]
    assert "xds-server test" in leaf["issuer"]
    assert leaf["fingerprint_sha256"] == fingerprint(pair.chain)
    assert leaf["not_after"].endswith("Z") and leaf["key_type"] == "RSA 2048"

    # The store keeps the key (Envoy needs it); only what leaves the API is redacted.
    stored = api.store.current().get("Certificate", "shop")
    assert stored is not None and stored.spec["private_key"] == pair.key

    await record(await api.put("certificates/clients", ca.bundle_document("clients")))
    await record(await api.put("tls-policies/edge", policy()))
    rotated = ca.issue("shop.example.com")
    await record(await api.put("certificates/shop", rotated.document("shop")))
    for path in (
        "/v1/certificates",
        "/v1/certificates/shop",
        "/v1/history",
        "/v1/history/4",
        "/v1/history?kind=Certificate",
        "/v1/tls-policies/edge",
    ):
        response = await record(await api.client.get(path))
        assert response.status_code == 200, path
    history = json.loads(seen[-2])["items"]  # ?kind=Certificate
    assert {e["operation"] for e in history} == {"create", "update"}
    update = next(e for e in history if e["operation"] == "update")
    assert update["before"]["certificate"] == pair.chain  # the history is all there, keys aside
    for request in (
        api.client.put("/v1/certificates/shop?dry_run=true", json=pair.document("shop")),
        api.client.post("/v1/apply", json=[pair.document("shop")]),
        api.client.post("/v1/apply?dry_run=true", json=[rotated.document("shop")]),
        api.client.post("/v1/rollback", json={"revision": 2}),
        api.client.delete("/v1/certificates/shop?dry_run=true"),
    ):
        await record(await request)
    assert len(seen) == 15
    for text in seen:
        assert_no_key(text, pair, rotated)


async def test_a_read_document_sent_back_needs_its_key_again(api: Api, pair: KeyPair) -> None:
    await api.put("certificates/shop", pair.document("shop"))
    read = (await api.client.get("/v1/certificates/shop")).json()
    problem = assert_problem(await api.client.put("/v1/certificates/shop", json=read), 422)
    assert "private_key is missing" in reason_at(problem, "spec")
    read["spec"]["private_key"] = pair.key
    assert (await api.client.put("/v1/certificates/shop", json=read)).status_code == 200


def _bad_documents(ca: TestCa, pair: KeyPair) -> list[tuple[str, dict[str, Any], str, str]]:
    other = ca.issue("other.example.com")
    expired = ca.issue(
        "old.example.com", not_before=utc_now() - 10 * DAY, not_after=utc_now() - DAY
    )
    garbage = "-----BEGIN CERTIFICATE-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE-----\n"
    return [
        (
            "garbage PEM",
            KeyPair(garbage, pair.key).document("shop"),
            "spec.certificate",
            "not a valid X.509 certificate",
        ),
        (
            "mismatched key",
            KeyPair(pair.chain, other.key).document("shop"),
            "spec",
            "does not match the certificate",
        ),
        ("expired", expired.document("shop"), "spec.certificate", "expired on"),
        (
            "unknown cipher",
            policy(downstream={"certificates": ["shop"], "cipher_suites": ["NULL-MD5"]}),
            "spec.downstream.cipher_suites[0]",
            "unknown cipher suite 'NULL-MD5'",
        ),
        (
            "min > max",
            policy(upstream={"min_version": "1.3", "max_version": "1.2"}),
            "spec.upstream",
            "min_version 1.3 is above max_version 1.2",
        ),
    ]


async def test_bad_certificates_and_policies_are_refused_and_nothing_changes(
    api: Api, ca: TestCa, pair: KeyPair
) -> None:
    assert (await api.put("certificates/shop", pair.document("shop"))).status_code == 201
    revision = await api.revision()
    before = (await api.client.get("/v1/certificates/shop")).json()
    for what, document, field, expected in _bad_documents(ca, pair):
        path = "certificates" if document["kind"] == "Certificate" else "tls-policies"
        for response in (
            await api.put(f"{path}/{document['name']}", document),
            await api.client.post("/v1/apply", json=[document]),
        ):
            problem = assert_problem(response, 422)
            assert expected in reason_at(problem, field), (what, problem)
            assert_no_key(response.text, pair)
            assert response.headers["x-config-revision"] == str(revision), what
        assert await api.revision() == revision, what
    assert (await api.client.get("/v1/certificates/shop")).json() == before


async def test_an_expired_certificate_may_be_allowed(api: Api, ca: TestCa) -> None:
    expired = ca.issue("old.example.com", not_before=utc_now() - 9 * DAY, not_after=utc_now() - DAY)
    response = await api.put("certificates/old", expired.document("old", allow_expired=True))
    assert response.status_code == 201, response.text
    assert ["expired on" in w["reason"] for w in response.json()["warnings"]] == [True]


async def test_file_certificates_are_read_and_shown(
    api: Api, pair: KeyPair, tmp_path: Path
) -> None:
    document = pair.file_document("shop", tmp_path / "tls")
    response = await api.put("certificates/shop", document)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["spec"] == document["spec"] and body["warnings"] == []
    assert body["info"]["source"] == "file"
    assert body["info"]["certificates"][0]["fingerprint_sha256"] == fingerprint(pair.chain)

    missing = {
        "kind": "Certificate",
        "name": "elsewhere",
        "spec": {
            "certificate_file": "/nonexistent/tls/a.pem",
            "private_key_file": "/nonexistent/tls/a.key",
        },
    }
    response = await api.put("certificates/elsewhere", missing)
    assert response.status_code == 201, response.text  # Envoy may see files the server cannot
    body = response.json()
    assert {w["field"] for w in body["warnings"]} == {
        "spec.certificate_file",
        "spec.private_key_file",
    }
    assert "cannot read /nonexistent/tls/a.pem" in body["info"]["error"]

    # A key file given as the certificate: refused, and the key is not repeated.
    swapped = {
        "kind": "Certificate",
        "name": "swapped",
        "spec": {
            "certificate_file": document["spec"]["private_key_file"],
            "private_key_file": document["spec"]["private_key_file"],
        },
    }
    problem = assert_problem(await api.put("certificates/swapped", swapped), 422)
    assert "contains a private key" in reason_at(problem, "spec.certificate_file")
    assert_no_key(json.dumps(problem), pair)


async def test_references_are_checked_and_certificates_in_use_cannot_go(
    api: Api, ca: TestCa, pair: KeyPair
) -> None:
    problem = assert_problem(await api.put("tls-policies/edge", policy()), 422)
    assert reason_at(problem, "spec.downstream.certificates[0]") == "no certificate 'shop'"
    assert reason_at(problem, "spec.downstream.client_certificate.ca") == (
        "no certificate 'clients'"
    )
    text = "\n---\n".join(
        json.dumps(d)
        for d in (
            pair.document("shop"),
            ca.bundle_document("clients"),
            policy(),
            listener("secure", 8443, protocol="https", tls_policy="edge"),
        )
    )
    applied = await api.client.post("/v1/apply", content=text, headers=YAML)
    assert applied.status_code == 200, applied.text
    assert_no_key(applied.text, pair)
    conflict = assert_problem(await api.client.delete("/v1/certificates/clients"), 409)
    assert "TlsPolicy 'edge'" in conflict["detail"]
    conflict = assert_problem(await api.client.delete("/v1/tls-policies/edge"), 409)
    assert "Listener 'secure'" in conflict["detail"]

    by_certificate = await api.client.get("/v1/tls-policies?certificate=clients")
    assert [d["name"] for d in by_certificate.json()["items"]] == ["edge"]
    assert (await api.client.get("/v1/tls-policies?certificate=nope")).json()["items"] == []
    by_policy = await api.client.get("/v1/listeners?tls_policy=edge")
    assert [d["name"] for d in by_policy.json()["items"]] == ["secure"]
