// Command testimage is the program of the node's test images (a static binary, standard library only), so the
// node can be proven before the operator's own images exist and without any registry:
//
//	testimage pause                                     the pod sandbox ("pause") container: waits for a signal, reaps
//	testimage serve [--listen :8080] [--ready-after 2s] an HTTP server whose readiness turns true only after a delay
//
// serve answers:
//
//	GET /healthz        200 always (liveness)
//	GET /ready          503 until --ready-after has passed since start, then 200 (the readiness probe)
//	ANY /api?path=P     sends the same method and body to the API server at path P with the pod's projected
//	                    service-account token and CA, and answers 200 with {"status": N, "body": "..."}: the
//	                    API server's own answer, so a test outside the pod can judge what the token may do
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

// Where the kubelet mounts the projected service-account volume (token, ca.crt, namespace).
const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: testimage pause | serve [--listen ADDR] [--ready-after DURATION]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "pause":
		pause()
	case "serve":
		if err := serve(os.Args[2:]); err != nil {
			fmt.Fprintf(os.Stderr, "testimage: %v\n", err)
			os.Exit(1)
		}
	default:
		fmt.Fprintf(os.Stderr, "testimage: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
}

// pause is what Kubernetes' pause image does: hold the pod's namespaces, reap orphans (it is PID 1 of the
// sandbox) and exit on SIGINT or SIGTERM.
func pause() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	listen := fs.String("listen", ":8080", "address to listen on")
	readyAfter := fs.Duration("ready-after", 2*time.Second, "how long /ready answers 503 after start")
	if err := fs.Parse(args); err != nil {
		return err
	}
	started := time.Now()
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) {
		if time.Since(started) < *readyAfter {
			http.Error(w, "not ready yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("/api", forwardToAPIServer)

	listener, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "testimage: serving on %s, ready after %s\n", listener.Addr(), *readyAfter)
	server := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		signals := make(chan os.Signal, 1)
		signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
		<-signals
		server.Close()
	}()
	if err := server.Serve(listener); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// forwardToAPIServer makes the request named by ?path= against the API server the way an in-cluster client
// does: KUBERNETES_SERVICE_HOST/PORT set by the kubelet, the projected token and the cluster's CA.
func forwardToAPIServer(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Query().Get("path")
	if path == "" || path[0] != '/' {
		http.Error(w, "?path=/api/... is required", http.StatusBadRequest)
		return
	}
	token, err := os.ReadFile(filepath.Join(serviceAccountDir, "token"))
	if err != nil {
		http.Error(w, "reading the service-account token: "+err.Error(), http.StatusBadGateway)
		return
	}
	caPEM, err := os.ReadFile(filepath.Join(serviceAccountDir, "ca.crt"))
	if err != nil {
		http.Error(w, "reading the cluster CA: "+err.Error(), http.StatusBadGateway)
		return
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		http.Error(w, "ca.crt holds no certificate", http.StatusBadGateway)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	host := net.JoinHostPort(os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT"))
	request, err := http.NewRequest(r.Method, "https://"+host+path, bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	request.Header.Set("Authorization", "Bearer "+string(bytes.TrimSpace(token)))
	request.Header.Set("Content-Type", "application/json")
	request.Header.Set("Accept", "application/json")
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
	}
	response, err := client.Do(request)
	if err != nil {
		http.Error(w, "API server "+host+": "+err.Error(), http.StatusBadGateway)
		return
	}
	defer response.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(response.Body, 1<<20))
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"status": response.StatusCode, "body": string(answer)})
}
