"""The ``opcua:`` config section: the OPC UA → Kafka connector (``connectors/opcua.py``).

Examples
--------
>>> c = OpcUaConfig.model_validate({"endpoint": "opc.tcp://plc:4840", "browse": ["ns=2;s=Channel1"],
...     "security": {"policy": "Basic256Sha256", "mode": "SignAndEncrypt", "trust": ["pki/trusted"],
...                  "certificate": "c.der", "private_key": "k.pem"}})
>>> c.security.mode, c.queue_size, c.browse
('SignAndEncrypt', 1000, ('ns=2;s=Channel1',))
>>> try:
...     OpcUaSecurity(policy="Basic256Sha256", mode="Sign")
... except ValueError as exc:
...     print("certificate" in str(exc))
True
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from plantstream.schemas._base import Frozen


class OpcUaNode(Frozen):
    """One node to subscribe: by ``node_id`` (``ns=2;s=Channel1.press-01.MachineState``) or by
    ``browse_path`` (``0:Objects/2:Channel1/2:press-01/2:MachineState``). ``tag`` names it in
    the tag dictionary (default: the string identifier, else the browse names joined by ``.``)."""

    node_id: str | None = None
    browse_path: str | None = None
    tag: str | None = None

    @model_validator(mode="after")
    def _one(self) -> OpcUaNode:
        if (self.node_id is None) == (self.browse_path is None):
            msg = "give exactly one of node_id or browse_path for each opcua.nodes entry"
            raise ValueError(msg)
        return self


class OpcUaSecurity(Frozen):
    """Security policy and mode; Basic256Sha256 needs the client certificate and key."""

    policy: Literal["None", "Basic256Sha256"] = "None"
    mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    certificate: str | None = None
    """Client certificate (DER or PEM); its URI SAN must equal ``application_uri``."""
    private_key: str | None = None
    private_key_password: SecretStr | None = None
    server_certificate: str | None = None
    """Pin the server certificate (a file, DER or PEM): the one certificate trusted."""
    trust: tuple[str, ...] = ()
    """Trust list: certificate files (DER or PEM) and folders of them (``*.der``, ``*.pem``,
    ``*.crt``). With Basic256Sha256 the certificate the server presents must be one of these
    (or ``server_certificate``); any other is refused before a session is opened."""
    trust_on_first_use: bool = False
    """Explicit opt-in: with no trust list, pin the first certificate the server presents in
    ``pinned_certificate_file`` and refuse any other afterwards."""
    pinned_certificate_file: str = ".plantstream/opcua-server-cert.der"
    """Where trust-on-first-use keeps the pinned certificate (DER); delete it to re-pin."""
    application_uri: str = "urn:plantstream:opcua-connector"

    @model_validator(mode="after")
    def _consistent(self) -> OpcUaSecurity:
        if (self.policy == "None") != (self.mode == "None"):
            msg = (f"opcua.security: policy {self.policy!r} with mode {self.mode!r}; use policy None with "
                   "mode None, or Basic256Sha256 with Sign or SignAndEncrypt")
            raise ValueError(msg)
        if self.policy != "None" and (not self.certificate or not self.private_key):
            msg = ("opcua.security: Basic256Sha256 needs certificate and private_key (the client's "
                   "application instance certificate and its key)")
            raise ValueError(msg)
        if self.policy != "None" and not (self.server_certificate or self.trust or self.trust_on_first_use):
            msg = ("opcua.security: Basic256Sha256 needs a way to check the server's certificate: set "
                   "trust (certificate files or a folder of them), server_certificate (one pinned "
                   "file), or trust_on_first_use: true to pin the first certificate the server presents")
            raise ValueError(msg)
        return self


class OpcUaConfig(Frozen):
    """The OPC UA connector (see ``docs/connectors.md``)."""

    endpoint: str = "opc.tcp://127.0.0.1:4840"
    security: OpcUaSecurity = OpcUaSecurity()
    username: str | None = None
    password: SecretStr | None = None
    browse: tuple[str, ...] = ()
    """Folders (NodeId or browse path) whose variables are discovered and subscribed."""
    browse_depth: int = Field(default=4, ge=1, le=16)
    ignore: tuple[str, ...] = ()
    """Source-tag patterns (``fnmatch``, e.g. ``*.ToolID``) of browsed variables not to subscribe."""
    nodes: tuple[OpcUaNode, ...] = ()
    sampling_interval_ms: float = Field(default=0.0, ge=0)
    """0 = the server's fastest (every change)."""
    publishing_interval_ms: float = Field(default=100.0, gt=0)
    queue_size: int = Field(default=1000, ge=1)
    """Values the server queues per node between publishes (no loss up to this many changes)."""
    deadband: float | None = Field(default=None, ge=0)
    """Absolute deadband for Float/Double nodes (condition signals); counters and states never."""
    backfill: bool = True
    """After a reconnect or restart, read the values missed meanwhile with HistoryRead."""
    state_file: str = ".plantstream/opcua-state.json"
    """Last value time per node, for backfill across restarts."""
    connect_timeout_s: float = Field(default=10.0, gt=0)
    reconnect_initial_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    watchdog_s: float = Field(default=2.0, gt=0)
    """How often the connection is checked; a dead one is reconnected and re-subscribed."""
    source: str = "opcua"
