// Command kstatus reads one object from a Kubernetes API server and prints its kstatus verdict, computed by
// sigs.k8s.io/cli-utils/pkg/kstatus/status exactly as Flux (kustomize-controller, helm-controller health
// checks) computes it. It exists so jpki-access's tests can check that the operator's custom resources
// (conditions Ready/Reconciling/Stalled, observedGeneration) read as Flux would read them. Not part of the
// operator; built into target/testenv/kstatus by scripts/controlplane.
//
// Usage:
//
//	kstatus [--kubeconfig PATH] RESOURCE NAME [-n|--namespace NS]
//	  e.g. kstatus --kubeconfig k accessregistrations.access.jpki.dev r1 -n ns1
//
// RESOURCE is "resource" for the core group (configmaps), else "resource.group" or "resource.version.group"
// (plural or singular name; the group's preferred version unless given). Without --namespace, the kubeconfig context's namespace (else "default") is used for namespaced
// resources. Prints one JSON line, {"status":"Current","message":"..."}, where status is a kstatus Status:
// Current, InProgress, Failed, Terminating, NotFound or Unknown. Exit 0 whenever a status was printed
// (NotFound included); other errors go to stderr with exit 2.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	flags := pflag.NewFlagSet("kstatus", pflag.ContinueOnError)
	kubeconfig := flags.String("kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
	namespace := flags.StringP("namespace", "n", "", "namespace of a namespaced object (default: the context's)")
	if err := flags.Parse(os.Args[1:]); err != nil || flags.NArg() != 2 {
		fail(fmt.Errorf("usage: kstatus [--kubeconfig PATH] RESOURCE NAME [-n NAMESPACE]"))
	}
	resource, name := flags.Arg(0), flags.Arg(1)

	// Kubeconfig and namespace resolution as kubectl's: --kubeconfig, else $KUBECONFIG, else ~/.kube/config.
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = *kubeconfig
	loader := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules,
		&clientcmd.ConfigOverrides{Context: clientcmdapi.Context{Namespace: *namespace}})
	config, err := loader.ClientConfig()
	if err != nil {
		fail(err)
	}
	config.Timeout = 30 * time.Second
	ns, _, err := loader.Namespace()
	if err != nil {
		fail(err)
	}

	client, err := dynamic.NewForConfig(config)
	if err != nil {
		fail(err)
	}
	raw := rest.CopyConfig(config)
	raw.NegotiatedSerializer = serializer.NewCodecFactory(runtime.NewScheme()).WithoutConversion()
	discovery, err := rest.UnversionedRESTClientFor(raw)
	if err != nil {
		fail(err)
	}
	ctx := context.Background()
	gvr, namespaced, err := resolve(ctx, discovery, resource)
	if err != nil {
		fail(err)
	}
	var getter dynamic.ResourceInterface = client.Resource(gvr)
	if namespaced {
		getter = client.Resource(gvr).Namespace(ns)
	}
	obj, err := getter.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		emit(status.NotFoundStatus, err.Error())
		return
	}
	if err != nil {
		fail(err)
	}
	// The call Flux's health checks make on each object. (Flux itself now imports github.com/fluxcd/cli-utils,
	// a hard fork of this module made in 2023.)
	result, err := status.Compute(obj)
	if err != nil {
		fail(err)
	}
	emit(result.Status, result.Message)
}

// resolve maps RESOURCE to its group/version/resource and scope with the server's discovery documents, read as
// plain metav1 types: client-go's discovery client and REST mappers would link in every built-in API type
// (k8s.io/api), doubling the binary for nothing. A "resource.version.group" argument is tried as such first;
// otherwise (or if that fails, since groups contain dots too) the group's preferred version is used.
func resolve(ctx context.Context, rc rest.Interface, arg string) (schema.GroupVersionResource, bool, error) {
	full, gr := schema.ParseResourceArg(arg)
	if full != nil {
		if gvr, namespaced, err := find(ctx, rc, full.GroupVersion(), full.Resource); err == nil {
			return gvr, namespaced, nil
		}
	}
	gv := schema.GroupVersion{Version: "v1"} // the core group, /api/v1
	if gr.Group != "" {
		var group metav1.APIGroup
		if err := getJSON(ctx, rc, "/apis/"+gr.Group, &group); err != nil {
			return schema.GroupVersionResource{}, false, fmt.Errorf("API group %q: %w", gr.Group, err)
		}
		gv = schema.GroupVersion{Group: gr.Group, Version: group.PreferredVersion.Version}
	}
	return find(ctx, rc, gv, gr.Resource)
}

// find looks RESOURCE (plural or singular name) up in one group version's resource list.
func find(ctx context.Context, rc rest.Interface, gv schema.GroupVersion, resource string) (schema.GroupVersionResource, bool, error) {
	path := "/apis/" + gv.String()
	if gv.Group == "" {
		path = "/api/" + gv.Version
	}
	var list metav1.APIResourceList
	if err := getJSON(ctx, rc, path, &list); err != nil {
		return schema.GroupVersionResource{}, false, fmt.Errorf("API %s: %w", gv, err)
	}
	for _, r := range list.APIResources {
		if !strings.Contains(r.Name, "/") && (r.Name == resource || r.SingularName == resource) {
			return gv.WithResource(r.Name), r.Namespaced, nil
		}
	}
	return schema.GroupVersionResource{}, false, fmt.Errorf("the server has no resource %q in %s", resource, gv)
}

// getJSON reads one discovery document.
func getJSON(ctx context.Context, rc rest.Interface, path string, into any) error {
	body, err := rc.Get().AbsPath(path).DoRaw(ctx)
	if err != nil {
		return err
	}
	return json.Unmarshal(body, into)
}

// emit prints the one JSON line that is this command's result.
func emit(s status.Status, message string) {
	line, _ := json.Marshal(struct {
		Status  string `json:"status"`
		Message string `json:"message"`
	}{s.String(), message})
	fmt.Println(string(line))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "kstatus:", err)
	os.Exit(2)
}
