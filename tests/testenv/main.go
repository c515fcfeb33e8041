// Command kube-testenv runs a real Kubernetes control plane on 127.0.0.1 for jpki-access's tests and demo:
// embedded etcd and kube-apiserver in this process, kube-controller-manager (garbage collector and namespace
// controller) as a child process of this same binary. It is not part of the operator.
//
// Usage:
//
//	kube-testenv [--dir DIR] [--port N] [-- APISERVER-FLAGS...]   run; prints the kubeconfig path as the only stdout line
//	kube-testenv kcm FLAGS...                                      (internal) the controller-manager child
//	kube-testenv controller-manager FLAGS...                       kube-controller-manager on its own (scripts/node
//	                                                               runs the workload controllers with it)
//	kube-testenv kubectl ARGS...  (or invoked through a symlink named kubectl)
//	kube-testenv faultproxy --dir DIR --upstream URL                a proxy in front of kube-apiserver that answers
//	                                                               500/429 or late on demand (faultproxy.go)
//
// With --dir pointing at a directory from an earlier run, the certificates, tokens, ports and etcd data are
// reused, so a stopped control plane can be started again with the same kubeconfig (fault tests rely on it).
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	kcm "k8s.io/kubernetes/cmd/kube-controller-manager/app"

	// Authentication plugins for kubectl, as cmd/kubectl imports them.
	_ "k8s.io/client-go/plugin/pkg/client/auth"
)

func main() {
	// Busybox-style dispatch: each role runs in its own process, so the process-global state of
	// kube-apiserver, kube-controller-manager and kubectl (signal handlers, feature gates, flags) never mixes.
	if filepath.Base(os.Args[0]) == "kubectl" {
		runKubectl(os.Args[1:])
		return
	}
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "kcm":
			watchParent()
			runControllerManager(os.Args[2:])
			return
		case "controller-manager":
			runControllerManager(os.Args[2:])
			return
		case "kubectl":
			runKubectl(os.Args[2:])
			return
		case "faultproxy":
			if err := runFaultProxy(os.Args[2:]); err != nil {
				fmt.Fprintf(os.Stderr, "kube-testenv: %v\n", err)
				os.Exit(1)
			}
			return
		case "version":
			fmt.Println(kubernetesVersion())
			return
		}
	}
	if err := runControlPlane(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "kube-testenv: %v\n", err)
		os.Exit(1)
	}
}

func runKubectl(args []string) {
	os.Args = append([]string{"kubectl"}, args...)
	logs.GlogSetter(kubectlcmd.GetLogVerbosity(os.Args)) //nolint:errcheck
	command := kubectlcmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		kubectlutil.CheckErr(err)
	}
}

func runControllerManager(args []string) {
	command := kcm.NewControllerManagerCommand()
	command.SetArgs(args)
	os.Exit(cli.Run(command))
}

// kubernetesVersion is the version stamped in by the build (-ldflags -X ...gitVersion=).
func kubernetesVersion() string {
	v := gitVersion()
	if v == "" || strings.Contains(v, "master") {
		return "unstamped (" + v + ")"
	}
	return v
}
