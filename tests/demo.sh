#!/usr/bin/env bash
# make demo: show kubectl tp on the local cluster (started by `make cluster-up`).
# Until the swap-deployment issue lands, it deploys a "green" service and calls it by name from a
# local curl run through `kubectl tp run`.
set -euo pipefail
cd "$(dirname "$0")/.."
export KUBECONFIG=${E2E_KUBECONFIG:-/var/lib/kubectl-tp-e2e/admin.kubeconfig}
export PATH=$PWD/bin:/var/cache/kubectl-tp/k8s-v1.34.4:$PATH
ns=tp-demo
kubectl get namespace "$ns" >/dev/null 2>&1 || kubectl create namespace "$ns" >/dev/null
kubectl apply -n "$ns" -f tests/demo/dataprocessingservice.yaml >/dev/null
kubectl rollout status -n "$ns" deployment/dataprocessingservice --timeout=120s >/dev/null
echo "== kubectl tp version"
kubectl-tp version
echo
echo "== a local curl, run with 'kubectl tp run', calls the in-cluster Service by its name:"
echo "   kubectl tp run -n $ns -- curl -s http://dataprocessingservice:3000/color"
color=$(kubectl-tp run -n "$ns" --quiet -- curl -sf http://dataprocessingservice:3000/color)
echo "   → $color   (answered by the Deployment running in the cluster)"
