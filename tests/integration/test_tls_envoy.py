"""TLS end to end: config over REST to the server (a subprocess), a real Envoy, Python TLS
clients and upstreams, test certificates made here.

- https listeners present the certificate chosen by SNI (and by key type: RSA and ECDSA side
  by side), enforce the minimum TLS version, and verify client certificates (mTLS);
- Envoy speaks mutual TLS to an HTTPS upstream with the configured SNI, and fails (503)
  when the CA does not match;
- a certificate replaced through the API reaches new handshakes within 2 s while a request
  in flight completes and no listener is modified (so none drains); a file certificate
  rotates by replacing its files;
- bad input is a 422 naming the problem, with the revision unchanged;
- no private key shows up in any API response, history entry, log line or config dump.
"""

from __future__ import annotations

import datetime
import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.envoy import Envoy, bootstrap, free_port, free_ports, wait_for
from tests.support.pki import ECDSA, KeyPair, TestCa, utc_now
from tests.support.process import ServerProcess
from tests.support.tls import (
    TestUpstream,
    client_context,
    connect,
    dns_names,
    fingerprint,
    https_get,
    peer_certificate,
    plain_get,
    read_response,
    send_request,
)

pytestmark = pytest.mark.envoy

#: The acceptance bound on how soon new handshakes get a replaced certificate.
ROTATION_BOUND = 2.0


class Rest:
    """The admin API over HTTP; every response body is kept (for the no-key test)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.responses: list[str] = []

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, str], Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"content-type": "application/json"} if data else {},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, headers, text = response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            status, headers, text = error.code, dict(error.headers), error.read()
        decoded = text.decode()
        self.responses.append(decoded)
        headers = {k.lower(): v for k, v in headers.items()}
        return status, headers, json.loads(decoded) if decoded else None

    def put(self, document: dict[str, Any]) -> dict[str, Any]:
        path = {
            "Certificate": "certificates",
            "TlsPolicy": "tls-policies",
            "Listener": "listeners",
            "Route": "routes",
            "ServicePolicy": "service-policies",
        }[document["kind"]]
        status, _, body = self.call("PUT", f"/v1/{path}/{document['name']}", document)
        assert status in (200, 201), body
        result: dict[str, Any] = body
        return result

    def apply(self, documents: list[dict[str, Any]]) -> dict[str, Any]:
        status, _, body = self.call("POST", "/v1/apply", documents)
        assert status == 200, body
        result: dict[str, Any] = body
        return result

    def revision(self) -> int:
        return int(self.call("GET", "/v1/revision")[2]["revision"])


@dataclass
class Stack:
    rest: Rest
    server: ServerProcess
    envoy: Envoy
    ca: TestCa
    client_ca: TestCa
    upstream_ca: TestCa
    pairs: dict[str, KeyPair]
    web: TestUpstream
    secure_api: TestUpstream
    tmp: Path
    ports: dict[str, int] = field(default_factory=dict)

    def trusting(self, **options: Any) -> ssl.SSLContext:
        return client_context(self.ca.pem, **options)

    def remember(self, name: str, pair: KeyPair) -> KeyPair:
        self.pairs[f"{name}#{len(self.pairs)}"] = pair
        return pair


def doc(kind: str, name: str, **spec: Any) -> dict[str, Any]:
    return {"kind": kind, "name": name, "spec": spec}


def served_fingerprint(port: int, name: str, context: ssl.SSLContext) -> str:
    with connect(port, name, context) as connection:
        return fingerprint(peer_certificate(connection))


def pair_fingerprint(pair: KeyPair) -> str:
    from cryptography import x509

    return fingerprint(x509.load_pem_x509_certificate(pair.chain.encode()))


Answer = tuple[int, dict[str, str], str]


def answered(status: int, answer: Answer) -> Answer | None:
    """``answer`` if it has ``status`` (for ``wait_for``)."""
    return answer if answer[0] == status else None


def base_config(stack: Stack) -> list[dict[str, Any]]:
    ports, pairs = stack.ports, stack.pairs
    inline = ("default", "shop-rsa", "shop-ecdsa", "api", "rotating", "proxy-client")
    return [
        *(pairs[name].document(name) for name in inline),
        stack.client_ca.bundle_document("clients-ca"),
        stack.upstream_ca.bundle_document("upstream-ca"),
        doc(
            "TlsPolicy",
            "edge",
            downstream={
                "certificates": ["default"],
                "sni": [
                    {
                        "server_names": ["shop.example.com"],
                        "certificates": ["shop-rsa", "shop-ecdsa"],
                    },
                    {"server_names": ["api.example.com"], "certificates": ["api"]},
                ],
                "min_version": "1.2",
            },
        ),
        doc("TlsPolicy", "strict", downstream={"certificates": ["default"], "min_version": "1.3"}),
        doc(
            "TlsPolicy",
            "mutual",
            downstream={
                "certificates": ["default"],
                "client_certificate": {
                    "ca": "clients-ca",
                    "required": True,
                    "forward_details": ["subject", "uri"],
                },
            },
        ),
        doc("TlsPolicy", "rotating", downstream={"certificates": ["rotating"]}),
        doc(
            "TlsPolicy",
            "to-api",
            upstream={
                "mode": "mutual",
                "sni": "api.internal",
                "ca": "upstream-ca",
                "client_certificate": "proxy-client",
            },
        ),
        *(
            doc(
                "Listener",
                name,
                address="127.0.0.1",
                port=ports[name],
                protocol="https",
                tls_policy=name,
                access_log=False,
            )
            for name in ("edge", "strict", "mutual", "rotating")
        ),
        doc("Listener", "plain", address="127.0.0.1", port=ports["plain"], access_log=False),
        doc(
            "Listener",
            "redirect",
            address="127.0.0.1",
            port=ports["redirect"],
            https_redirect=True,
            https_redirect_port=ports["edge"],
            access_log=False,
        ),
        doc(
            "Route",
            "web",
            listeners=["edge", "strict", "mutual", "rotating", "plain"],
            rules=[{"backends": [{"service": "web"}]}],
        ),
        doc(
            "Route",
            "api",
            listeners=["plain"],
            rules=[
                {"matches": [{"path": {"prefix": "/api"}}], "backends": [{"service": "secure-api"}]}
            ],
        ),
        doc("ServicePolicy", "secure-api", tls_policy="to-api", connect_timeout="1s"),
    ]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("tls")
    ca, client_ca, upstream_ca = TestCa(), TestCa(name="clients"), TestCa(name="upstream")
    pairs = {
        "default": ca.issue("default.example.com"),
        "shop-rsa": ca.issue("shop.example.com"),
        "shop-ecdsa": ca.issue("shop.example.com", key_type=ECDSA),
        "api": ca.issue("api.example.com"),
        "rotating": ca.issue("rotating.example.com"),
        "client": client_ca.issue("client.example.com"),
        "stranger": TestCa(name="strangers").issue("client.example.com"),
        "proxy-client": client_ca.issue("proxy.internal"),
        "api-server": upstream_ca.issue("api.internal"),
    }
    with ExitStack() as cleanup:
        web = TestUpstream("web").start()
        cleanup.callback(web.stop)
        secure_api = TestUpstream(
            "secure-api", server=pairs["api-server"], client_ca=client_ca.pem
        ).start()
        cleanup.callback(secure_api.stop)
        registry = tmp / "registry.yaml"
        registry.write_text(
            "services:\n"
            f"  web:\n    endpoints: [{{address: 127.0.0.1, port: {web.port}}}]\n"
            f"  secure-api:\n    endpoints: [{{address: 127.0.0.1, port: {secure_api.port}}}]\n"
        )
        server = ServerProcess(
            "--ads-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--registry",
            f"static:{registry}",
            "--store",
            f"sqlite:{tmp / 'store.db'}",
            "--log-format",
            "text",
        ).start()
        cleanup.callback(server.kill)
        envoy = Envoy(bootstrap(server.ads_port)).start()
        cleanup.callback(envoy.stop)
        names = ("edge", "strict", "mutual", "rotating", "plain", "redirect")
        ports = dict(zip(names, free_ports(len(names)), strict=True))
        rest = Rest(server.admin)
        built = Stack(
            rest, server, envoy, ca, client_ca, upstream_ca, pairs, web, secure_api, tmp, ports
        )
        rest.apply(base_config(built))
        context = built.trusting()
        for name, host in (
            ("edge", "default.example.com"),
            ("strict", "default.example.com"),
            ("rotating", "rotating.example.com"),
        ):
            wait_for(
                lambda n=name, h=host: https_get(ports[n], h, context)[0] == 200,  # type: ignore[misc]
                30,
                f"the {name} listener",
                envoy.check_alive,
            )
        yield built
        envoy.check_alive()


# -- downstream ----------------------------------------------------------------------------


def test_an_https_listener_presents_the_certificate_chosen_by_sni(stack: Stack) -> None:
    port, context = stack.ports["edge"], stack.trusting()
    for asked, expected in (
        ("shop.example.com", "shop.example.com"),
        ("api.example.com", "api.example.com"),
        ("unknown.example.com", "default.example.com"),
    ):
        # The client checks the chain against the test CA and the name against the SNI it
        # sent, except for the unknown name (the default certificate cannot match it).
        client = stack.trusting()
        client.check_hostname = asked != "unknown.example.com"
        with connect(port, asked, client) as connection:
            assert dns_names(peer_certificate(connection)) == [expected], asked
    status, _, body = https_get(port, "shop.example.com", context)
    assert (status, body) == (200, "web")


def test_rsa_and_ecdsa_certificates_side_by_side(stack: Stack) -> None:
    port = stack.ports["edge"]
    by_key = {}
    for cipher in ("ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256"):
        context = stack.trusting(max_version=ssl.TLSVersion.TLSv1_2, ciphers=cipher)
        by_key[cipher] = served_fingerprint(port, "shop.example.com", context)
    assert by_key == {
        "ECDHE-RSA-AES128-GCM-SHA256": pair_fingerprint(stack.pairs["shop-rsa"]),
        "ECDHE-ECDSA-AES128-GCM-SHA256": pair_fingerprint(stack.pairs["shop-ecdsa"]),
    }


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_clients_below_the_minimum_version_are_refused(stack: Stack) -> None:
    name = "default.example.com"
    # min 1.2: a TLS 1.1-only client is refused, a TLS 1.2 one served.
    old = stack.trusting(
        min_version=ssl.TLSVersion.TLSv1_1,
        max_version=ssl.TLSVersion.TLSv1_1,
        ciphers="DEFAULT:@SECLEVEL=0",
    )
    try:
        https_get(stack.ports["edge"], name, old)
    except ssl.SSLError as error:
        local_refusal = "NO_PROTOCOLS_AVAILABLE" in str(error) or "no protocols" in str(error)
        if local_refusal:
            print("local OpenSSL refuses TLS 1.1 itself: only the 1.3-minimum case is shown")
        else:
            print(f"TLS 1.1 client refused by Envoy: {error}")
            assert "protocol version" in str(error).lower() or "alert" in str(error).lower()
    else:
        pytest.fail("a TLS 1.1 client was served by a listener with min_version 1.2")
    tls12 = stack.trusting(max_version=ssl.TLSVersion.TLSv1_2)
    assert https_get(stack.ports["edge"], name, tls12)[0] == 200
    # min 1.3: a client that can do at most TLS 1.2 is refused, a TLS 1.3 one served.
    with pytest.raises(ssl.SSLError) as refused:
        https_get(stack.ports["strict"], name, tls12)
    print(f"TLS 1.2 client against min_version 1.3: {refused.value}")
    assert https_get(stack.ports["strict"], name, stack.trusting())[0] == 200


def test_an_mtls_listener_wants_a_client_certificate_from_its_ca(stack: Stack) -> None:
    port, name = stack.ports["mutual"], "default.example.com"
    wait_for(lambda: _mtls_ready(stack), 30, "the mutual listener", stack.envoy.check_alive)
    for client in (None, stack.pairs["stranger"]):
        with pytest.raises((ssl.SSLError, ConnectionError)) as refused:
            https_get(port, name, stack.trusting(client=client))
        print(
            f"client certificate {'none' if client is None else 'from another CA'}: "
            f"{refused.value!r}"
        )
    status, _, body = https_get(port, name, stack.trusting(client=stack.pairs["client"]))
    assert (status, body) == (200, "web")
    forwarded = stack.web.seen[-1].headers["x-forwarded-client-cert"]
    assert 'Subject="CN=client.example.com' in forwarded


def _mtls_ready(stack: Stack) -> bool:
    context = stack.trusting(client=stack.pairs["client"])
    return https_get(stack.ports["mutual"], "default.example.com", context)[0] == 200


def test_a_plain_listener_redirects_to_https(stack: Stack) -> None:
    port = stack.ports["redirect"]
    _, headers, _ = wait_for(
        lambda: answered(301, plain_get(port, "shop.example.com", "/a/b?c=1")),
        30,
        "the redirect",
        stack.envoy.check_alive,
    )
    assert headers["location"] == f"https://shop.example.com:{stack.ports['edge']}/a/b?c=1"


# -- upstream ------------------------------------------------------------------------------


def test_envoy_speaks_mutual_tls_to_an_upstream_and_fails_with_the_wrong_ca(
    stack: Stack,
) -> None:
    port = stack.ports["plain"]
    _, _, body = wait_for(
        lambda: answered(200, plain_get(port, "anything", "/api/x")),
        30,
        "the TLS upstream",
        stack.envoy.check_alive,
    )
    assert body == "secure-api"
    assert stack.secure_api.server_names[-1] == "api.internal"
    assert stack.secure_api.seen[-1].client_subject is not None
    assert stack.secure_api.seen[-1].client_subject.startswith("CN=proxy.internal")

    stack.rest.put(TestCa(name="wrong").bundle_document("wrong-ca"))
    stack.rest.put(
        doc(
            "TlsPolicy",
            "to-api",
            upstream={
                "mode": "mutual",
                "sni": "api.internal",
                "ca": "wrong-ca",
                "client_certificate": "proxy-client",
            },
        )
    )
    try:
        wait_for(
            lambda: plain_get(port, "anything", "/api/x")[0] == 503,
            10,
            "503 with the wrong CA",
            stack.envoy.check_alive,
        )
    finally:
        stack.rest.put(
            doc(
                "TlsPolicy",
                "to-api",
                upstream={
                    "mode": "mutual",
                    "sni": "api.internal",
                    "ca": "upstream-ca",
                    "client_certificate": "proxy-client",
                },
            )
        )
    wait_for(
        lambda: plain_get(port, "anything", "/api/x")[0] == 200,
        10,
        "the right CA again",
        stack.envoy.check_alive,
    )


# -- rotation ------------------------------------------------------------------------------


def test_a_replaced_certificate_reaches_new_handshakes_without_a_drain(stack: Stack) -> None:
    port, name = stack.ports["rotating"], "rotating.example.com"
    context = stack.trusting()
    old = served_fingerprint(port, name, context)
    assert old == pair_fingerprint(stack.pairs["rotating"])
    modified = stack.envoy.stat("listener_manager.listener_modified")
    stack.web.release.clear()
    in_flight = connect(port, name, context)
    try:
        send_request(in_flight, name, "/slow")
        wait_for(lambda: any(s.path == "/slow" for s in stack.web.seen), 10, "the slow request")

        new = stack.remember("rotating", stack.ca.issue("rotating.example.com"))
        started = time.monotonic()
        stack.rest.put(new.document("rotating"))
        wait_for(
            lambda: served_fingerprint(port, name, context) == pair_fingerprint(new),
            ROTATION_BOUND * 5,
            "the new certificate",
            stack.envoy.check_alive,
            interval=0.02,
        )
        delay = time.monotonic() - started
        print(f"certificate replaced through the API -> new handshakes: {delay * 1000:.0f} ms")
        assert delay <= ROTATION_BOUND

        stack.web.release.set()
        status, _, body = read_response(in_flight)
        assert (status, body) == (200, "web")  # the request in flight completed
    finally:
        stack.web.release.set()
        in_flight.close()
    assert stack.envoy.stat("listener_manager.listener_modified") == modified
    assert stack.envoy.stat("listener_manager.total_filter_chains_draining") == 0
    # The counter does count: changing the listener itself (not its certificate) moves it.
    listener = doc(
        "Listener",
        "rotating",
        address="127.0.0.1",
        port=port,
        protocol="https",
        tls_policy="rotating",
        access_log=True,
    )
    stack.rest.put(listener)
    wait_for(
        lambda: stack.envoy.stat("listener_manager.listener_modified") == modified + 1,
        10,
        "the modified listener",
        stack.envoy.check_alive,
    )


def test_a_file_certificate_rotates_when_its_files_are_replaced(stack: Stack) -> None:
    port = free_port()
    directory = stack.tmp / "files"
    first = stack.remember("file", stack.ca.issue("file.example.com"))
    stack.rest.apply(
        [
            first.file_document("from-files", directory),
            doc("TlsPolicy", "from-files", downstream={"certificates": ["from-files"]}),
            doc(
                "Listener",
                "from-files",
                address="127.0.0.1",
                port=port,
                protocol="https",
                tls_policy="from-files",
                access_log=False,
            ),
        ]
    )
    read = stack.rest.call("GET", "/v1/certificates/from-files")[2]
    assert read["info"]["certificates"][0]["fingerprint_sha256"].replace(":", "").lower() == (
        pair_fingerprint(first)
    )
    context = stack.trusting()
    name = "file.example.com"
    wait_for(
        lambda: served_fingerprint(port, name, context) == pair_fingerprint(first),
        30,
        "the file certificate",
        stack.envoy.check_alive,
    )
    modified = stack.envoy.stat("listener_manager.listener_modified")
    second = stack.remember("file", stack.ca.issue("file.example.com"))
    started = time.monotonic()
    second.write(directory, "from-files")
    wait_for(
        lambda: served_fingerprint(port, name, context) == pair_fingerprint(second),
        10,
        "the replaced files",
        stack.envoy.check_alive,
        interval=0.02,
    )
    print(f"files replaced -> new handshakes: {(time.monotonic() - started) * 1000:.0f} ms")
    assert stack.envoy.stat("listener_manager.listener_modified") == modified


# -- bad input -----------------------------------------------------------------------------


def test_bad_input_is_refused_by_name_and_changes_nothing(stack: Stack) -> None:
    pair = stack.pairs["default"]
    other = stack.pairs["api"]
    expired = stack.remember(
        "expired",
        stack.ca.issue(
            "old.example.com",
            not_before=utc_now() - datetime.timedelta(days=9),
            not_after=utc_now() - datetime.timedelta(days=1),
        ),
    )
    garbage = "-----BEGIN CERTIFICATE-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE-----\n"
    cases = [
        (
            "certificates/default",
            KeyPair(garbage, pair.key).document("default"),
            "spec.certificate",
            "not a valid X.509 certificate",
        ),
        (
            "certificates/default",
            KeyPair(pair.chain, other.key).document("default"),
            "spec",
            "does not match the certificate",
        ),
        ("certificates/default", expired.document("default"), "spec.certificate", "expired on"),
        (
            "tls-policies/edge",
            doc(
                "TlsPolicy",
                "edge",
                downstream={"certificates": ["default"], "cipher_suites": ["RC4-SHA"]},
            ),
            "spec.downstream.cipher_suites[0]",
            "unknown cipher suite 'RC4-SHA'",
        ),
        (
            "tls-policies/edge",
            doc(
                "TlsPolicy",
                "edge",
                downstream={
                    "certificates": ["default"],
                    "min_version": "1.3",
                    "max_version": "1.2",
                },
            ),
            "spec.downstream",
            "min_version 1.3 is above max_version 1.2",
        ),
    ]
    revision = stack.rest.revision()
    versions = stack.envoy.versions()
    for path, document, field_name, expected in cases:
        status, headers, problem = stack.rest.call("PUT", f"/v1/{path}", document)
        assert status == 422, problem
        assert headers["content-type"] == "application/problem+json"
        reasons = {e["field"]: e["reason"] for e in problem["errors"]}
        assert expected in reasons.get(field_name, ""), problem
        assert headers["x-config-revision"] == str(revision)
    assert stack.rest.revision() == revision
    assert stack.envoy.versions() == versions
    served = served_fingerprint(stack.ports["edge"], "default.example.com", stack.trusting())
    assert served == pair_fingerprint(pair)


# -- no private key anywhere (last: it looks at what every test above produced) -------------


def _proxy_dumps(stack: Stack) -> list[str]:
    status, _, listing = stack.rest.call("GET", "/v1/proxies")
    if status != 200:
        return []
    dumps = []
    for proxy in listing.get("items", []):
        status, _, _ = stack.rest.call("GET", f"/v1/proxies/{proxy['node_id']}/config")
        assert status == 200
        dumps.append(stack.rest.responses[-1])
    return dumps


def test_no_private_key_shows_anywhere(stack: Stack) -> None:
    rest = stack.rest
    for path in ("/v1/certificates", "/v1/tls-policies", "/v1/history?limit=1000"):
        assert rest.call("GET", path)[0] == 200
    for revision in range(1, rest.revision() + 1):
        rest.call("GET", f"/v1/history/{revision}")
    proxy_dumps = _proxy_dumps(stack)
    envoy_dump = stack.envoy.get("/config_dump?include_eds")
    secrets = [c for c in json.loads(envoy_dump)["configs"] if "SecretsConfigDump" in c["@type"]]
    assert secrets and "dynamic_active_secrets" in secrets[0]  # secrets did arrive over SDS
    places = {
        "API responses": "\n".join(rest.responses),
        "server output": "".join(stack.server.output),
        "Envoy config dump": envoy_dump,
        "Envoy /certs": stack.envoy.get("/certs"),
        "Envoy log": stack.envoy.log_path.read_text(errors="replace"),
        "/v1/proxies config": "\n".join(proxy_dumps),
    }
    fragments = {f for pair in stack.pairs.values() for f in pair.key_fragments()}
    print({place: len(text) for place, text in places.items()})
    assert len(rest.responses) > 20
    assert any("certificate/default" in dump for dump in proxy_dumps)  # secrets are listed
    for place, text in places.items():
        assert "PRIVATE KEY" not in text, place
        leaked = [f for f in fragments if f in text]
        assert not leaked, f"{place} shows private key material"
    # The keys were in the config all along: Envoy serves with them.
    assert "[redacted]" in envoy_dump


def test_client_status_discovery_shows_no_private_key(stack: Stack) -> None:
    import grpc
    from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{stack.server.ads_port}") as channel:
        answer = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel).FetchClientStatus(
            csds_pb2.ClientStatusRequest(), timeout=10
        )
    text = str(answer)
    assert "certificate/" in text  # the secrets are listed
    fragments = {f for pair in stack.pairs.values() for f in pair.key_fragments()}
    assert "PRIVATE KEY" not in text
    assert not [f for f in fragments if f in text.replace("\\n", "\n")]
