module spreadhook.io/benchmarks/nullhook

go 1.22
