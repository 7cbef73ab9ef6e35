"""The ``spreadhook`` command line.

Exit codes, for every command: 0 success; 2 invalid input, with the errors on stderr; 1 a runtime
failure, with one line saying what failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from spreadhook import logs, model, mutation, simulation, spread
from spreadhook.logs import LEVELS

EXIT_OK, EXIT_FAILURE, EXIT_INVALID = 0, 1, 2


class InvalidInput(Exception):
    """The user's input is wrong; the message (one error per line) goes to stderr and the exit code is 2."""


def load_documents(path: str) -> list[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") if path != "-" else sys.stdin as handle:
            docs = [d for d in yaml.safe_load_all(handle) if d is not None]
    except OSError as exc:
        raise InvalidInput(f"{path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{path}: not valid YAML: {exc}") from exc
    if not all(isinstance(d, dict) for d in docs):
        raise InvalidInput(f"{path}: every YAML document must be an object")
    return docs


def load_workload_spread(path: str) -> model.WorkloadSpread:
    """The one WorkloadSpread in a file (which may also hold its workload), validated."""
    spreads = [d for d in load_documents(path) if d.get("kind") == model.KIND]
    if len(spreads) != 1:
        raise InvalidInput(f"{path}: expected exactly one WorkloadSpread, found {len(spreads)}")
    obj = spreads[0]
    if obj.get("apiVersion") not in model.SERVED_VERSIONS:
        raise InvalidInput(f"{path}: apiVersion {obj.get('apiVersion')!r} is not one of "
                           + ", ".join(model.SERVED_VERSIONS))
    try:
        ws = model.parse(obj)
    except model.ModelError as exc:
        raise InvalidInput(f"{path}: {exc}") from exc
    errors = model.validate(ws)
    if errors:
        raise InvalidInput("\n".join(f"{path}: {e}" for e in errors))
    return ws


# -- plan ------------------------------------------------------------------------------------------


def cmd_plan(args: argparse.Namespace) -> int:
    ws = load_workload_spread(args.file)
    if args.replicas < 0 or args.start < 0:
        raise InvalidInput("--replicas and --from must be >= 0")
    result = simulation.plan(model.to_dict(ws), args.replicas, start=args.start,
                             workload_replicas=args.workload_replicas)
    if args.output == "json":
        print(json.dumps(result, indent=2))
        return EXIT_OK
    patches = {s.name: summarize_patch(s) for s in ws.subsets}
    rows = [(str(r["name"] or "(no subset)"), str(r["replicas"]),
             "unlimited" if r["maxReplicas"] is None else str(r["maxReplicas"]), patches.get(r["name"], ""))
            for r in result["subsets"]]
    print(f"Scaling {ws.target_ref.kind if ws.target_ref else '?'} {ws.target_ref.name if ws.target_ref else '?'}"
          f" from {args.start} to {args.replicas} replicas:")
    print(table(("SUBSET", "PODS", "MAX", "PATCH"), rows))
    if result["scaleIn"]:
        print(f"\nScale-in from {max(args.replicas, args.start)} to {min(args.replicas, args.start)}, "
              "pods leave in this order:")
        print(table(("ORDER", "SUBSET", "PODS"),
                    [(str(i), str(r["subset"] or "(no subset)"), str(r["pods"]))
                     for i, r in enumerate(result["scaleIn"], start=1)]))
    return EXIT_OK


def summarize_patch(subset: model.Subset) -> str:
    """What a subset does to a pod, in one short line for a table."""
    parts = [f"{path[-1]}={value}" for path, value in _leaves(subset.patch or {}, ()) if path]
    if subset.required_node_selector:
        parts.append("required node selector")
    if subset.preferred_node_selector:
        parts.append("preferred nodes")
    if subset.tolerations:
        parts.append(f"{len(subset.tolerations)} toleration(s)")
    text = ", ".join(parts) or "-"
    return text if len(text) <= 80 else text[:77] + "..."


def _leaves(value: Any, prefix: tuple[str, ...]) -> list[tuple[tuple[str, ...], str]]:
    if isinstance(value, Mapping):
        out = []
        for key, item in value.items():
            out += _leaves(item, (*prefix, str(key)))
        return out
    if isinstance(value, list):
        return [(prefix, json.dumps(value, separators=(",", ":")))]
    return [(prefix, str(value))]


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=False)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip()
             for row in (header, *rows)]
    return "\n".join(lines)


# -- mutate ----------------------------------------------------------------------------------------


def cmd_mutate(args: argparse.Namespace) -> int:
    ws = load_workload_spread(args.file)
    pods = [d for d in load_documents(args.pod) if d.get("kind", "Pod") == "Pod"]
    if len(pods) != 1:
        raise InvalidInput(f"{args.pod}: expected exactly one Pod, found {len(pods)}")
    pod = pods[0]
    if args.subset:
        subset = ws.subset(args.subset)
        if subset is None:
            raise InvalidInput(f"--subset {args.subset!r} is not one of: " + ", ".join(s.name for s in ws.subsets))
    else:
        admission = spread.admit(ws, ws.status.clone(), pod, workload_replicas=args.workload_replicas,
                                 now=dt.datetime.now(dt.UTC), new_uid=lambda: "")
        if admission.subset is None:
            raise InvalidInput(f"no subset would take this pod: {admission.reason}")
        subset = admission.subset
    try:
        mutated, patch = mutation.mutate(pod, ws, subset)
    except ValueError as exc:
        raise InvalidInput(f"subset {subset.name}: {exc}") from exc
    if args.output == "patch":
        print(json.dumps(patch, indent=2))
    elif args.output == "json":
        print(json.dumps(mutated, indent=2))
    else:
        print(yaml.safe_dump(mutated, sort_keys=False), end="")
    return EXIT_OK


# -- server, reconciler, certificates, demo, status -----------------------------------------------------


def _serve_options(args: argparse.Namespace, *, reconcile: bool) -> Any:
    from spreadhook.server import ServeOptions

    if args.store == "memory" and args.workers > 1:
        raise InvalidInput("--store memory keeps its ledger in the process: use --workers 1")
    return ServeOptions(cert_dir=args.cert_dir, host=args.host, port=args.port, workers=args.workers,
                        threads=args.threads, store=args.store, seed=args.seed, reconcile=reconcile,
                        conversion_port=args.conversion_port)


def cmd_serve(args: argparse.Namespace) -> int:
    from spreadhook.runtime import build_app
    from spreadhook.server import SpreadhookServer, multiprocess_metrics_dir, start_conversion_process

    logs.configure(args.log_level)
    options = _serve_options(args, reconcile=args.command == "run")
    if options.store == "kube" and os.environ.get("KUBERNETES_SERVICE_HOST"):
        options = bootstrap_certificates(options)
    for name in ("tls.crt", "tls.key"):
        if not os.path.exists(os.path.join(options.cert_dir, name)):
            raise InvalidInput(f"--cert-dir {options.cert_dir}: {name} is missing (create it with "
                               "`spreadhook certs --out DIR`)")
    multiprocess_metrics_dir(options.workers)
    conversion = start_conversion_process(options) if options.conversion_port else None
    try:
        SpreadhookServer(options, build_app).run()
    finally:
        if conversion is not None:
            conversion.terminate()
    return EXIT_OK


def bootstrap_certificates(options: Any) -> Any:
    """In a cluster: make sure the TLS Secret exists (created once, shared by every replica), that the
    webhook configurations and the CRD trust its CA, and serve it. A freshly created Secret reaches the
    mounted volume only at kubelet's next sync, so until then the pair is served from a private copy."""
    import dataclasses
    import tempfile

    from kubernetes import client, config

    from spreadhook import certs

    config.load_incluster_config()
    api = client.ApiClient()
    namespace = os.environ.get("POD_NAMESPACE", "spreadhook-system")
    bundle = certs.ensure_secret(api, namespace)
    certs.inject_ca_bundle(api, bundle.ca_bundle_pem())
    if os.path.exists(os.path.join(options.cert_dir, "tls.crt")):
        return options
    private = tempfile.mkdtemp(prefix="spreadhook-tls-")
    certs.write_bundle(private, bundle)
    return dataclasses.replace(options, cert_dir=private)


def cmd_reconcile(args: argparse.Namespace) -> int:
    import threading

    from spreadhook.kubestore import KubeStore
    from spreadhook.runtime import start_reconciler, tune_garbage_collector

    logs.configure(args.log_level)
    store = KubeStore.from_environment()
    store.start()
    tune_garbage_collector()
    start_reconciler(store)
    threading.Event().wait()
    return EXIT_OK


def cmd_certs(args: argparse.Namespace) -> int:
    from spreadhook import certs

    bundle = certs.load_or_create(args.out, args.service, args.namespace, extra_sans=args.san or ())
    print(f"certificates in {args.out}: tls.crt (expires {bundle.serving.not_after:%Y-%m-%d}), tls.key, ca.crt")
    if args.inject:
        from kubernetes import config

        result = certs.inject_ca_bundle(config.new_client_from_config(), bundle.ca_bundle_pem())
        print(f"caBundle injected: {result}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from spreadhook.demo import run_demo

    ws_obj = model.to_dict(load_workload_spread(args.file)) if args.file else None
    if min(args.replicas, args.overflow, args.scale_in_to) < 0 or args.concurrency < 1:
        raise InvalidInput("--replicas, --overflow and --scale-in-to must be >= 0 and --concurrency >= 1")
    result = run_demo(ws_obj, replicas=args.replicas, overflow=args.overflow, scale_in_to=args.scale_in_to,
                      concurrency=args.concurrency, write_latency_ms=args.write_latency_ms)
    if args.output == "json":
        print(json.dumps(result, indent=2))
    else:
        print(table(("SUBSET", "PODS", "MAX"), [(str(r["name"] or "(no subset)"), str(r["replicas"]),
                                                 "unlimited" if r["maxReplicas"] is None else str(r["maxReplicas"]))
                                                for r in result["subsets"]]))
        if result["scaleIn"]:
            order = ", ".join(f"{r['subset'] or '(no subset)'} x{r['pods']}" for r in result["scaleIn"])
            print(f"\nscale-in order: {order}")
        latency = result["latency_ms"]
        print(f"\nadmission latency p50 {latency['p50']} ms, p95 {latency['p95']} ms, p99 {latency['p99']} ms; "
              f"{result['admissions_per_s']} admissions/s; {result['ledger_writes_per_pod']} ledger writes per pod")
        print("verdict: ok, no subset ever exceeded its max" if result["verdict"] == "ok"
              else "verdict: VIOLATED: " + "; ".join(result["violations"]))
    return EXIT_OK if result["verdict"] == "ok" else EXIT_FAILURE


def cmd_status(args: argparse.Namespace) -> int:
    from kubernetes import client, config

    api = client.CustomObjectsApi(config.new_client_from_config())
    try:
        obj = api.get_namespaced_custom_object(model.GROUP, "v1beta1", args.namespace, "workloadspreads", args.name)
    except client.ApiException as exc:
        if exc.status == 404:
            raise InvalidInput(f"WorkloadSpread {args.namespace}/{args.name} not found") from exc
        raise
    ws = model.parse(obj)  # type: ignore[arg-type]
    rows = []
    for subset in ws.status.subset_statuses:
        condition = subset.condition(model.CONDITION_SCHEDULABLE)
        rows.append((subset.name, str(subset.replicas),
                     "unlimited" if subset.missing_replicas == -1 else str(subset.missing_replicas),
                     str(len(subset.creating_pods)), str(len(subset.deleting_pods)),
                     condition.status if condition else "-"))
    ref = ws.target_ref
    print(f"WorkloadSpread {ws.key} -> {ref.kind if ref else '?'} {ref.name if ref else '?'} "
          f"(observedGeneration {ws.status.observed_generation}/{ws.generation})")
    print(table(("SUBSET", "PODS", "MISSING", "CREATING", "DELETING", "SCHEDULABLE"), rows))
    return EXIT_OK


# -- entry point -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spreadhook", description=__doc__.splitlines()[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)

    plan = commands.add_parser("plan", help="what-if: the subsets after a scale, and the scale-in order")
    plan.add_argument("-f", "--file", required=True, help="a YAML file holding one WorkloadSpread")
    plan.add_argument("--replicas", type=int, required=True, help="the replica count to scale to")
    plan.add_argument("--from", dest="start", type=int, default=0, help="the replica count to scale from")
    plan.add_argument("--workload-replicas", type=int, default=None,
                      help="the base for percentage maxReplicas (default: the workload's replica count)")
    plan.add_argument("-o", "--output", choices=("table", "json"), default="table")
    plan.set_defaults(run=cmd_plan)

    mutate = commands.add_parser("mutate", help="show a pod as the webhook would admit it into a subset")
    mutate.add_argument("-f", "--file", required=True, help="a YAML file holding one WorkloadSpread")
    mutate.add_argument("-p", "--pod", required=True, help="a YAML file holding one Pod")
    mutate.add_argument("--subset", help="the subset (default: the one the first replica would get)")
    mutate.add_argument("--workload-replicas", type=int, default=1, help="the base for percentage maxReplicas")
    mutate.add_argument("-o", "--output", choices=("yaml", "json", "patch"), default="yaml")
    mutate.set_defaults(run=cmd_mutate)

    for name, help_text in (("serve", "serve the admission webhooks over TLS"),
                            ("run", "serve the webhooks and run the reconciler (leader-elected)")):
        serve = commands.add_parser(name, help=help_text)
        serve.add_argument("--cert-dir", required=True, help="folder with tls.crt, tls.key and ca.crt")
        serve.add_argument("--host", default="0.0.0.0")
        serve.add_argument("--port", type=int, default=9443)
        serve.add_argument("--store", choices=("kube", "memory"), default="kube")
        serve.add_argument("--seed", help="with --store memory: a YAML file of WorkloadSpreads and workloads")
        serve.add_argument("--workers", type=int, default=1)
        serve.add_argument("--threads", type=int, default=256,
                           help="admissions in flight at once: at least the API servers' mutating in-flight "
                                "limit (200 each) divided by the webhook replicas (default 256)")
        serve.add_argument("--conversion-port", type=int, default=None,
                           help="serve the CRD conversion webhook on this port, from threads of its own")
        serve.add_argument("--log-level", choices=LEVELS, default="info")
        serve.set_defaults(run=cmd_serve)

    reconcile = commands.add_parser("reconcile", help="run the reconciler alone (leader-elected)")
    reconcile.add_argument("--log-level", choices=LEVELS, default="info")
    reconcile.set_defaults(run=cmd_reconcile)

    certs = commands.add_parser("certs", help="create or renew the CA and serving certificate")
    certs.add_argument("--out", required=True)
    certs.add_argument("--service", default="spreadhook-webhook")
    certs.add_argument("--namespace", default="spreadhook-system")
    certs.add_argument("--san", action="append", help="an extra DNS name or IP for the serving certificate")
    certs.add_argument("--inject", action="store_true", help="write the CA bundle into the webhook configurations")
    certs.set_defaults(run=cmd_certs)

    demo = commands.add_parser("demo", help="replay a burst of pod creations through the webhook over HTTPS")
    demo.add_argument("-f", "--file", help="a WorkloadSpread (default: 10 bandwidth packages of 300, then no-eip)")
    demo.add_argument("--replicas", type=int, default=3000)
    demo.add_argument("--overflow", type=int, default=300)
    demo.add_argument("--scale-in-to", type=int, default=1000)
    demo.add_argument("--concurrency", type=int, default=64)
    demo.add_argument("--write-latency-ms", type=float, default=2.0,
                      help="how long the embedded store takes per status write, as a loopback API server does")
    demo.add_argument("-o", "--output", choices=("table", "json"), default="table")
    demo.set_defaults(run=cmd_demo)

    status = commands.add_parser("status", help="a WorkloadSpread's subsets as the cluster counts them")
    status.add_argument("name")
    status.add_argument("-n", "--namespace", default="default")
    status.set_defaults(run=cmd_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except InvalidInput as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_INVALID
    except BrokenPipeError:  # `spreadhook plan ... | head`: the reader has what it wanted
        return EXIT_OK
    except KeyboardInterrupt:
        print("spreadhook: interrupted", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:  # the contract: one clear line, exit 1, for any runtime failure
        print(f"spreadhook {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
