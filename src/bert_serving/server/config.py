"""`ServerConfig`: every setting of a server, typed, defaulted and validated in one place.

The CLI (`cli.py`) is the only place that reads argv; it builds one of these. Each component
then receives the typed values it needs, never the whole configuration or namespace.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from dataclasses import asdict, dataclass, field, fields, replace

from ..errors import ConfigurationError
from ..model.settings import AUTO, EncoderSettings
from ..model.strategies import PoolingStrategy

__all__ = ["ModelEntry", "ServerConfig"]

# the global model flags an extra model takes unless it sets its own (the rest are the folder's own)
_INHERITED = ("max_seq_len", "dtype", "fp16", "normalize", "show_tokens", "trust_remote_code", "no_special_token",
              "mask_cls_sep")
# what ``-extra_model NAME=DIR,key=value,...`` may set: the model's own, then its replicas'
_MODEL_KEYS = ("max_seq_len", "dtype", "pooling_strategy", "pooling_layer", "normalize", "default_prompt_name",
               "num_labels")
_SERVING_KEYS = ("num_worker", "device_map", "max_batch_tokens", "max_queued_texts", "max_queued_bytes")


@dataclass(frozen=True)
class ModelEntry:
    """A model served beside the default one (``-extra_model NAME=DIR[,key=value...]``): its name
    (what a request's ``model`` field says), its settings, and its replicas' where they are its own
    (None: the global flag's)."""

    name: str
    encoder: EncoderSettings
    num_worker: int | None = None
    device_map: tuple[int, ...] | None = None
    max_batch_tokens: int | None = None
    max_queued_texts: int | None = None  # None: its share of -max_queued_texts
    max_queued_bytes: int | None = None  # None: its share of -max_queued_bytes

    @classmethod
    def parse(cls, text: str, defaults: EncoderSettings | None = None) -> ModelEntry:
        """``NAME=DIR[,key=value...]``; keys: max_seq_len, dtype, pooling_strategy, pooling_layer
        (``-1`` or ``-2:-1``), normalize (true/false), default_prompt_name, num_labels, num_worker,
        device_map (``0:1``), max_batch_tokens, max_queued_texts, max_queued_bytes. The model takes
        the global -max_seq_len, -dtype, -fp16, -normalize, ... unless it sets its own."""
        name, sep, rest = text.partition("=")
        name = name.strip()
        folder, *pairs = rest.split(",")
        if not sep or not name or not folder.strip():
            raise ConfigurationError(f"-extra_model {text!r}: write NAME=DIR[,key=value...], e.g. "
                                     "rerank=/models/ms-marco-MiniLM-L-6-v2,num_worker=1")
        own: dict[str, object] = {"model_dir": folder.strip()}
        serving: dict[str, object] = {}
        for pair in pairs:
            key, sep, value = (part.strip() for part in pair.partition("="))
            if not sep or key not in _MODEL_KEYS + _SERVING_KEYS:
                raise ConfigurationError(f"-extra_model {name}: {pair.strip()!r} is not key=value with a key among "
                                         f"{', '.join(_MODEL_KEYS + _SERVING_KEYS)}")
            try:
                if key == "device_map":
                    serving[key] = tuple(int(v) for v in value.split(":"))
                elif key in _SERVING_KEYS or key == "num_labels":
                    (serving if key in _SERVING_KEYS else own)[key] = int(value)
                elif key == "pooling_layer":
                    own[key] = tuple(int(v) for v in value.split(":"))
                elif key == "normalize":
                    if value.lower() not in ("true", "false"):
                        raise ValueError(value)
                    own[key] = value.lower() == "true"
                else:
                    own[key] = value
            except ValueError:
                raise ConfigurationError(f"-extra_model {name}: {key}={value!r} is not a valid value") from None
        inherited = {k: getattr(defaults or EncoderSettings(), k) for k in _INHERITED}
        return cls(name, EncoderSettings(**{**inherited, **own}), **serving)



@dataclass(frozen=True)
class ServerConfig:
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    # sockets
    bind: str = "0.0.0.0"  # interface for the ZeroMQ and HTTP ports
    port: int = 5555  # PULL: requests in
    port_out: int = 5556  # PUB: results out
    http_port: int | None = None
    http_max_connect: int = 1024  # open HTTP connections (and requests) at most; more get 503
    http_token_ids: bool = False  # the OpenAI route takes token ids (of the served model's vocabulary)
    cors: str = "*"
    api_key: str | None = field(default=None, repr=False)  # Bearer key for HTTP inference routes
    terminate_token: str | None = field(default=None, repr=False)  # lets TERMINATION in from other hosts
    zmq_secret_key: str | None = None  # CurveZMQ: the server's secret certificate file
    zmq_authorized_keys: str | None = None  # CurveZMQ: folder of the clients' public certificates
    # limits: refused with a clear error beyond these
    max_request_texts: int = 100_000
    max_request_bytes: int = 64 * 1024 * 1024
    max_queued_texts: int = 200_000  # backlog beyond which requests are refused as overloaded
    max_queued_bytes: int = 2 * 1024**3  # texts and results held for accepted requests, at most
    max_result_bytes: int = 512 * 1024**2  # the largest answer one request may get
    drain_timeout: float = 30.0  # seconds a shutdown waits for accepted requests
    # processes of the serving path (docs/configuration.md "Processes")
    num_intake: int | None = None  # ZeroMQ intake processes; None: from the core count (`intakes`)
    num_http: int | None = None  # HTTP processes sharing -http_port; None: from the core count
    # workers and devices
    num_worker: int = 1
    worker_threads: int = 0  # torch threads per CPU worker; 0 = the cores shared out
    cpu: bool = False
    device_map: tuple[int, ...] = ()
    gpu_memory_fraction: float = 0.5
    # batching
    max_batch_size: int = 256  # sequences per forward pass
    max_batch_tokens: int = 0  # padded tokens per forward pass; 0 = chosen for the device
    priority_batch_size: int = 16  # requests this small skip ahead of bulk work
    prefetch_size: int = 2  # batches in flight per replica
    idle_spin_ms: float = 2.0  # a local worker stays awake this long after a batch
    batch_timeout_s: float = 60.0  # a replica slower than this on one batch is taken for hung
    # replicas on a Ray cluster instead of local worker processes (docs/ray.md)
    ray_address: str | None = None  # auto, HOST:PORT of the head node, or local
    num_replicas: int | None = None  # default: -num_worker
    ray_num_cpus: float = 1.0  # per replica
    ray_num_gpus: float = 0.0  # per replica
    # the original's flags that have no meaning without TensorFlow, accepted and logged
    xla: bool = False
    graph_tmp_dir: str | None = None
    verbose: bool = False
    # models served beside -model_dir's, each with its own replicas (docs/configuration.md "Several models")
    extra_models: tuple[ModelEntry, ...] = ()

    def __post_init__(self) -> None:
        for name in ("port", "port_out", "http_port"):
            port = getattr(self, name)
            if port is not None and not 0 < port < 65536:
                raise ConfigurationError(f"-{name} {port} is not a TCP port (1-65535)")
        if self.port == self.port_out:
            raise ConfigurationError(f"-port and -port_out are both {self.port}; they must differ")
        if self.http_port is not None and self.http_port in (self.port, self.port_out):
            raise ConfigurationError(f"-http_port {self.http_port} collides with -port/-port_out")
        if self.num_worker < 1:
            raise ConfigurationError(f"-num_worker must be at least 1, got {self.num_worker}")
        for name in ("num_intake", "num_http"):
            if getattr(self, name) is not None and not 1 <= getattr(self, name) <= 64:
                raise ConfigurationError(f"-{name} must be between 1 and 64 (processes; default: half the cores, "
                                         f"at most {_MAX_AUTO_PROCESSES}), got {getattr(self, name)}")
        if self.max_batch_size < 1:
            raise ConfigurationError(f"-max_batch_size must be at least 1, got {self.max_batch_size}")
        if self.max_batch_tokens < 0:
            raise ConfigurationError(
                f"-max_batch_tokens must be positive (or 0 for automatic), got {self.max_batch_tokens}")
        if not 0 <= self.idle_spin_ms <= 1000:
            raise ConfigurationError(f"-idle_spin_ms must be between 0 and 1000 (milliseconds a worker stays awake "
                                     f"after a batch), got {self.idle_spin_ms}")
        if self.worker_threads < 0:
            raise ConfigurationError(f"-worker_threads must be at least 1 (torch threads per CPU worker; 0: the cores "
                                     f"shared out), got {self.worker_threads}")
        if self.drain_timeout < 0:
            raise ConfigurationError(f"-drain_timeout must be >= 0 (seconds a shutdown waits for accepted requests), "
                                     f"got {self.drain_timeout}")
        if self.prefetch_size < 1:
            raise ConfigurationError(f"-prefetch_size must be at least 1 (batches in flight per worker), got "
                                     f"{self.prefetch_size}")
        if self.batch_timeout_s <= 0:
            raise ConfigurationError(f"-batch_timeout_s must be positive, got {self.batch_timeout_s}")
        if self.priority_batch_size < 0:
            raise ConfigurationError(f"-priority_batch_size must be >= 0, got {self.priority_batch_size}")
        if self.max_request_texts < 1 or self.max_request_bytes < 1024 or self.max_queued_texts < 1:
            raise ConfigurationError("-max_request_texts and -max_queued_texts must be >= 1, "
                                     "-max_request_bytes >= 1024")
        if self.max_queued_bytes < 1024 or self.max_result_bytes < 1024:
            raise ConfigurationError("-max_queued_bytes and -max_result_bytes must be >= 1024")
        if self.http_max_connect < 1:
            raise ConfigurationError(f"-http_max_connect must be at least 1, got {self.http_max_connect}")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigurationError("the API key is empty; unset BERT_SERVING_API_KEY / -api_key, or give a key")
        if self.zmq_authorized_keys and not self.zmq_secret_key:
            raise ConfigurationError("-zmq_authorized_keys needs -zmq_secret_key (the server's own certificate)")
        if not 0.0 < self.gpu_memory_fraction <= 1.0:
            raise ConfigurationError(f"-gpu_memory_fraction must be in (0, 1], got {self.gpu_memory_fraction}")
        self._check_ray()
        names = [entry.name for entry in self.extra_models]
        if len(set(names)) < len(names):
            raise ConfigurationError(f"-extra_model names must differ, got {', '.join(names)}")
        for entry in self.extra_models:
            if entry.num_worker is not None and entry.num_worker < 1:
                raise ConfigurationError(f"-extra_model {entry.name}: num_worker must be at least 1")
            if self.ray_address and (entry.num_worker is not None or entry.device_map is not None):
                raise ConfigurationError(f"-extra_model {entry.name}: num_worker and device_map are for local "
                                         "workers; on a Ray cluster every model gets -num_replicas")

    def models(self) -> list[ServerConfig]:
        """One configuration per served model, the default one first: the flags, with each extra
        model's own settings in place of the global ones. CPU workers share the cores out among
        every model's replicas (unless -worker_threads says how many each gets); each model's
        backlog limits are its own share of -max_queued_texts and -max_queued_bytes unless it
        sets them, so that together they stay within the flags."""
        if not self.extra_models:
            return [self]
        count = 1 + len(self.extra_models)
        workers = self.num_worker + sum(e.num_worker or self.num_worker for e in self.extra_models)
        threads = self.worker_threads or max(1, (os.cpu_count() or 1) // workers)
        shared = {"extra_models": (), "worker_threads": threads,
                  "max_queued_texts": max(1, self.max_queued_texts // count),
                  "max_queued_bytes": max(1024, self.max_queued_bytes // count)}
        out = [replace(self, **shared)]
        for entry in self.extra_models:
            own = {key: getattr(entry, key) for key in _SERVING_KEYS if getattr(entry, key) is not None}
            out.append(replace(self, encoder=entry.encoder, **{**shared, **own}))
        return out

    def _check_ray(self) -> None:
        if self.ray_address is None:
            for name in _RAY_ONLY:
                if getattr(self, name) != _DEFAULTS[name]:
                    raise ConfigurationError(f"-{name} places replicas on a Ray cluster: it needs -ray_address "
                                             "(auto, HOST:PORT or local); local workers are set with -num_worker")
            return
        if not _is_ray_address(self.ray_address):
            raise ConfigurationError(f"-ray_address {self.ray_address!r} is none of: auto (the cluster this machine "
                                     "joined), HOST:PORT (its head node), local (start Ray in this process)")
        if self.num_replicas is not None and self.num_replicas < 1:
            raise ConfigurationError(f"-num_replicas must be at least 1, got {self.num_replicas}")
        if not self.ray_num_cpus > 0:
            raise ConfigurationError(f"-ray_num_cpus must be > 0 (CPUs reserved per replica), got {self.ray_num_cpus}")
        if not self.ray_num_gpus >= 0:
            raise ConfigurationError(f"-ray_num_gpus must be >= 0 (GPUs per replica), got {self.ray_num_gpus}")
        if not _ray_installed():
            raise ConfigurationError("-ray_address needs Ray, which is not installed: pip install 'bert-serving[ray]'")

    def intakes(self) -> int:
        """ZeroMQ intake processes: -num_intake, else half the cores (1 to 8): each parses, admits and
        tokenizes requests and answers them, so that none caps a many-core machine."""
        return self.num_intake or _auto_processes()

    def http_processes(self) -> int:
        """HTTP processes sharing -http_port: -num_http, else as many as intakes would be by default."""
        return self.num_http or _auto_processes()

    @property
    def replicas(self) -> int:
        """How many model replicas: -num_replicas on a Ray cluster, else -num_worker."""
        return self.num_replicas if self.ray_address and self.num_replicas else self.num_worker

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> ServerConfig:
        """From the parser of `cli.get_args_parser` (the original's flags and ours)."""
        values = vars(args)
        encoder_names = {f.name for f in fields(EncoderSettings)}
        encoder = {k: v for k, v in values.items() if k in encoder_names and v is not None}
        if "max_seq_len" in values:  # None is meaningful here: NONE, dynamic length
            encoder["max_seq_len"] = values["max_seq_len"]
        if encoder.get("pooling_layer") is not None:
            encoder["pooling_layer"] = tuple(encoder["pooling_layer"])
        if values.get("show_tokens_to_client"):
            encoder["show_tokens"] = True
        own = {f.name for f in fields(cls)} - {"encoder"}
        server = {k: v for k, v in values.items() if k in own and v is not None}
        if "device_map" in server:
            server["device_map"] = tuple(server["device_map"])
        settings = EncoderSettings(**encoder)
        if server.get("extra_models"):
            server["extra_models"] = tuple(entry if isinstance(entry, ModelEntry) else ModelEntry.parse(entry, settings)
                                           for entry in server["extra_models"])
        return cls(encoder=settings, **server)

    def devices(self) -> list[str]:
        """One torch device per worker: GPUs from -device_map (cycled) unless -cpu or none exist.
        On a Ray cluster, whatever each replica's -ray_num_gpus gives it."""
        if self.ray_address:
            return ["cuda" if self.ray_num_gpus else "cpu"] * self.replicas
        import torch

        if self.cpu or not torch.cuda.is_available():
            return ["cpu"] * self.num_worker
        ids = list(self.device_map) or list(range(torch.cuda.device_count()))
        return [f"cuda:{ids[i % len(ids)]}" for i in range(self.num_worker)]

    def threads_per_worker(self) -> int:
        """CPU threads each replica's torch may use: a Ray actor's -ray_num_cpus; a local worker's
        -worker_threads, else the cores shared out."""
        if self.ray_address:
            return max(1, int(self.ray_num_cpus))
        return self.worker_threads or max(1, (os.cpu_count() or 1) // self.num_worker)

    def batch_tokens(self, device: str, hidden_size: int = 384) -> int:
        """The token budget of one forward pass (rows x longest row). On CPU, measured for
        MiniLM-sized models on 2 cores (docs/benchmarks.md): fp32 1024 tokens per torch thread of
        a worker, so that each thread's share of an operation stays the size that runs best: 32
        one-sentence clients got 297-301 requests/s at 1024 against 274-284 at 2048 with two
        one-thread workers, and 264-275 at 2048 against 247-253 at 1024 with one two-thread
        worker (the default there); length-sorted bulk runs the same from 1024 to 4096.
        bfloat16 (AMX) 4096. A narrower model does less work per token, so its batches grow (as
        1/hidden^2, up to 16384 tokens) until the work again outweighs each pass's fixed cost.
        Larger on GPUs."""
        if self.max_batch_tokens:
            return self.max_batch_tokens
        if device.startswith("cuda"):
            return 16384
        base = 4096 if self.encoder.dtype == "bfloat16" else 1024 * self.threads_per_worker()
        return int(min(16384, max(base, base * (384 / max(hidden_size, 1)) ** 2)))

    def as_status(self) -> dict[str, object]:
        """The flags as SHOW_CONFIG reports them (the original's keys, pooling as an int)."""
        encoder = asdict(self.encoder)
        strategy = encoder.pop("pooling_strategy")
        status = {
            **{k: v for k, v in asdict(self).items()
               if k not in ("encoder", "api_key", "terminate_token", "extra_models")},
            "api_key_required": self.api_key is not None,
            **encoder,
            "pooling_strategy": strategy.value if isinstance(strategy, PoolingStrategy) else strategy,
            "show_tokens_to_client": self.encoder.show_tokens,
            "device_map": list(self.device_map),
        }
        if status["max_seq_len"] == AUTO:
            status["max_seq_len"] = None
        status["num_intake"] = self.intakes()
        status["num_http"] = self.http_processes() if self.http_port is not None else 0
        return status


_MAX_AUTO_PROCESSES = 8
_RAY_ONLY = ("num_replicas", "ray_num_cpus", "ray_num_gpus")  # meaningless without -ray_address
_DEFAULTS = {f.name: f.default for f in fields(ServerConfig) if f.name in _RAY_ONLY}


def _auto_processes() -> int:
    return max(1, min(_MAX_AUTO_PROCESSES, (os.cpu_count() or 1) // 2))


def _is_ray_address(address: str) -> bool:
    host, _, port = address.rpartition(":")
    return address in ("auto", "local") or (bool(host) and port.isdigit() and 0 < int(port) < 65536)


def _ray_installed() -> bool:
    """Without importing it (it takes seconds)."""
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):  # ValueError: sys.modules["ray"] is None
        return False
