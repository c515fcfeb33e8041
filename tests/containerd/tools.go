//go:build tools

// The container runtime of the test ground's node: containerd v2 (CRI plugin built in), its runc shim and ctr,
// and the CNI plugins the node's pod network uses (bridge, host-local, loopback), all built from the
// Go module versions pinned here (see scripts/node). runc comes from Debian. Nothing here ships with the operator.
// A module of its own, because containerd v2.4 requires the v0.37 Kubernetes libraries while the kubelet
// (../node) is v1.36.3 with its staging modules replaced to v0.36.3.
package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
	_ "github.com/containernetworking/plugins/plugins/ipam/host-local"
	_ "github.com/containernetworking/plugins/plugins/main/bridge"
	_ "github.com/containernetworking/plugins/plugins/main/loopback"
)
