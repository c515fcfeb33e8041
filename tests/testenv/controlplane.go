package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/component-base/version"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func gitVersion() string { return version.Get().GitVersion }

// state is what a later run over the same --dir reuses, so the kubeconfig written once stays valid.
type state struct {
	APIServerPort int `json:"apiServerPort"`
	EtcdPort      int `json:"etcdPort"`
	EtcdPeerPort  int `json:"etcdPeerPort"`
}

func runControlPlane(args []string) error {
	fs := flag.NewFlagSet("kube-testenv", flag.ContinueOnError)
	dir := fs.String("dir", "", "state directory (certificates, tokens, etcd data, logs); a temporary one when empty")
	port := fs.Int("port", 0, "kube-apiserver secure port on 127.0.0.1 (0: a free one, or the one recorded in --dir)")
	readyTimeout := fs.Duration("ready-timeout", 3*time.Minute, "how long to wait for /readyz")
	if err := fs.Parse(args); err != nil {
		return err
	}
	extraAPIServerFlags := fs.Args() // everything after "--"

	if *dir == "" {
		d, err := os.MkdirTemp("", "kube-testenv-")
		if err != nil {
			return fmt.Errorf("creating a state directory: %w", err)
		}
		*dir = d
	}
	absDir, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(absDir, 0o700); err != nil {
		return fmt.Errorf("creating state directory %s: %w", absDir, err)
	}

	st, err := loadOrPickPorts(absDir, *port)
	if err != nil {
		return err
	}
	for name, p := range map[string]int{"kube-apiserver --secure-port": st.APIServerPort, "etcd client": st.EtcdPort, "etcd peer": st.EtcdPeerPort} {
		if err := portFree(p); err != nil {
			return fmt.Errorf("port 127.0.0.1:%d (%s) is not free: %v; stop whatever holds it or choose another with --port", p, name, err)
		}
	}

	pki, err := ensurePKI(filepath.Join(absDir, "pki"))
	if err != nil {
		return fmt.Errorf("preparing certificates: %w", err)
	}
	kubeconfig, err := writeKubeconfigs(absDir, pki, st.APIServerPort)
	if err != nil {
		return err
	}

	logf("starting etcd on 127.0.0.1:%d (data in %s)", st.EtcdPort, filepath.Join(absDir, "etcd"))
	etcd, err := startEtcd(filepath.Join(absDir, "etcd"), st.EtcdPort, st.EtcdPeerPort)
	// A restart in the same directory reuses its ports, and a port of the ephemeral range can be held for a
	// moment by a client connection that happened to get it (CI saw "bind: address already in use" for etcd's
	// client port right after the free-port check passed): retry for a while before giving up.
	for attempt := 1; err != nil && strings.Contains(err.Error(), "address already in use") && attempt <= 30; attempt++ {
		logf("etcd: %v; retrying in 1s (%d/30)", err, attempt)
		time.Sleep(time.Second)
		etcd, err = startEtcd(filepath.Join(absDir, "etcd"), st.EtcdPort, st.EtcdPeerPort)
	}
	if err != nil {
		return fmt.Errorf("etcd failed to start: %w", err)
	}
	defer etcd.Close()

	apiserverArgs := append([]string{
		"--etcd-servers=http://127.0.0.1:" + strconv.Itoa(st.EtcdPort),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(st.APIServerPort),
		"--cert-dir=" + pki.dir,
		"--tls-cert-file=" + pki.servingCert,
		"--tls-private-key-file=" + pki.servingKey,
		"--client-ca-file=" + pki.caCert,
		"--token-auth-file=" + pki.tokenFile,
		"--kubelet-client-certificate=" + pki.kubeletClientCert,
		"--kubelet-client-key=" + pki.kubeletClientKey,
		// Reach a kubelet at its node's InternalIP, never by resolving the node's name through the machine's DNS.
		"--kubelet-preferred-address-types=InternalIP",
		// Node authorizer and NodeRestriction as in a real cluster: a kubelet (scripts/node, user
		// system:node:NAME in group system:nodes) may touch only its own Node and its pods' objects.
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + pki.saKey,
		"--service-account-signing-key-file=" + pki.saKey,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--allow-privileged=true",
		"--endpoint-reconciler-type=none",
		"--profiling=false",
	}, extraAPIServerFlags...)

	logf("starting kube-apiserver %s on https://127.0.0.1:%d", gitVersion(), st.APIServerPort)
	apiserverDone := make(chan error, 1)
	go func() {
		cmd := apiserver.NewAPIServerCommand()
		cmd.SetArgs(apiserverArgs)
		apiserverDone <- cmd.Execute()
	}()

	// kube-apiserver installs its own SIGTERM/SIGINT handler (first signal: graceful stop, second: exit 1).
	// We listen too, so that the controller-manager child and etcd are stopped after it.
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)

	client := adminHTTPClient(pki)
	base := "https://127.0.0.1:" + strconv.Itoa(st.APIServerPort)
	readyCtx, cancel := context.WithTimeout(context.Background(), *readyTimeout)
	err = waitReady(readyCtx, client, base, pki.adminToken, apiserverDone, etcd.Err())
	cancel()
	if err != nil {
		return err
	}

	kcmCmd, err := startControllerManager(absDir, pki)
	if err != nil {
		return fmt.Errorf("kube-controller-manager failed to start: %w", err)
	}
	kcmExited := make(chan error, 1)
	go func() { kcmExited <- kcmCmd.Wait() }()

	logf("ready in %s; kubeconfig %s", absDir, kubeconfig)
	fmt.Println(kubeconfig) // the only stdout line

	select {
	case <-signals:
		logf("stopping")
	case err := <-apiserverDone:
		stopChild(kcmCmd, kcmExited)
		return fmt.Errorf("kube-apiserver stopped: %v", err)
	case err := <-kcmExited:
		return fmt.Errorf("kube-controller-manager exited: %v (log: %s)", err, filepath.Join(absDir, "kcm.log"))
	case err := <-etcd.Err():
		stopChild(kcmCmd, kcmExited)
		return fmt.Errorf("etcd failed: %v", err)
	}
	stopChild(kcmCmd, kcmExited)
	select {
	case <-apiserverDone:
	case <-time.After(30 * time.Second):
		logf("kube-apiserver did not stop within 30s; exiting anyway")
	}
	return nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "kube-testenv: "+format+"\n", args...)
}

func loadOrPickPorts(dir string, apiPort int) (state, error) {
	path := filepath.Join(dir, "state.json")
	var st state
	if data, err := os.ReadFile(path); err == nil {
		if err := json.Unmarshal(data, &st); err != nil {
			return st, fmt.Errorf("reading %s: %w", path, err)
		}
	}
	if apiPort != 0 {
		st.APIServerPort = apiPort
	}
	var err error
	for _, p := range []*int{&st.APIServerPort, &st.EtcdPort, &st.EtcdPeerPort} {
		if *p == 0 {
			// A concrete port, not 0: etcd's gRPC gateway dials the configured address.
			if *p, err = freePort(); err != nil {
				return st, err
			}
		}
	}
	data, _ := json.MarshalIndent(st, "", "  ")
	return st, os.WriteFile(path, data, 0o600)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func portFree(port int) error {
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return err
	}
	return l.Close()
}

func adminHTTPClient(pki *pkiFiles) *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(pki.ca)
	return &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
}

// waitReady polls /readyz and the default namespace, failing fast if a component dies meanwhile.
func waitReady(ctx context.Context, client *http.Client, base, token string, apiserverDone <-chan error, etcdErr <-chan error) error {
	lastProblem := "no answer yet"
	for {
		select {
		case err := <-apiserverDone:
			return fmt.Errorf("kube-apiserver exited before it was ready: %v", err)
		case err := <-etcdErr:
			return fmt.Errorf("etcd failed before kube-apiserver was ready: %v", err)
		case <-ctx.Done():
			return fmt.Errorf("kube-apiserver not ready in time (last: %s)", lastProblem)
		case <-time.After(250 * time.Millisecond):
		}
		ok := true
		for _, path := range []string{"/readyz", "/api/v1/namespaces/default"} {
			if problem := get(client, base+path, token); problem != "" {
				lastProblem = path + ": " + problem
				ok = false
				break
			}
		}
		if ok {
			return nil
		}
	}
}

func get(client *http.Client, url, token string) string {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return err.Error()
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.Status
	}
	return ""
}

func startControllerManager(dir string, pki *pkiFiles) (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "kcm.log")
	// A file, never an unread pipe: a full pipe would block the child.
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "kcm",
		"--kubeconfig="+filepath.Join(dir, "kcm.kubeconfig"),
		// serviceaccount-controller makes each namespace's "default" ServiceAccount and the root-CA publisher its
		// kube-root-ca.crt ConfigMap: with them the ServiceAccount admission plugin (on, as in any cluster) gives
		// pods the projected token volume that in-cluster clients read (scripts/node runs pods on a real node).
		// clusterrole-aggregation fills the built-in view/edit/admin ClusterRoles from the roles labelled to
		// aggregate into them: without it they are empty, and a test "as a user bound to edit" proves nothing.
		"--controllers=garbage-collector-controller,namespace-controller,serviceaccount-controller,root-ca-certificate-publisher-controller,clusterrole-aggregation-controller",
		"--leader-elect=false",
		"--secure-port=0",
		"--use-service-account-credentials=false",
	)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// The child dies with us even on SIGKILL.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	logFile.Close()
	logf("kube-controller-manager started (pid %d, log %s)", cmd.Process.Pid, logPath)
	return cmd, nil
}

func stopChild(cmd *exec.Cmd, exited <-chan error) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(3 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// watchParent makes the controller-manager child exit when its parent is gone, should Pdeathsig not fire
// (it is tied to the parent thread, not the process).
func watchParent() {
	parent := os.Getppid()
	go func() {
		for range time.Tick(time.Second) {
			if os.Getppid() != parent {
				os.Exit(0)
			}
		}
	}()
}
