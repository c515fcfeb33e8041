//go:build tools

// The node of the test ground: kubelet and kube-scheduler of Kubernetes v1.36.3, the same release as the
// control plane in ../testenv, so the node runs without version skew and the build shares Go's caches with it.
// `go build k8s.io/kubernetes/cmd/kubelet` (see scripts/node) builds them from the versions pinned here.
// Nothing here ships with the operator.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
