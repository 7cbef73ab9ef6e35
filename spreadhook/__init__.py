"""spreadhook: OpenKruise-compatible WorkloadSpread admission webhook and reconciler."""
