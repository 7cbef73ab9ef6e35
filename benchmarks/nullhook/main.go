// nullhook is the burst benchmark's floor: a mutating webhook that reads each AdmissionReview in full
// (the pod decoded, as any webhook that looks at it must) and admits it unchanged, written in Go with the
// standard library only, so it gets what a Go webhook gets for free (HTTP/2, one multiplexed connection
// from kube-apiserver, no interpreter). Whatever a burst through it loses against the bare control plane is
// what any webhook costs on this machine before it decides anything; spreadhook's own cost is the rest.
//
// With -patch FILE it answers every review with the JSON patch in FILE instead (burst.py gives it the patch
// spreadhook answers for a burst pod): what any webhook that makes spreadhook's change to each pod costs,
// kube-apiserver's patch application and the larger pods included, before it decides anything.
package main

import (
	"encoding/base64"
	"encoding/json"
	"flag"
	"io"
	"log"
	"net/http"
	"os"
)

type review struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Request    *struct {
		UID    string         `json:"uid"`
		Object map[string]any `json:"object"`
	} `json:"request"`
}

type answer struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Response   struct {
		UID       string `json:"uid"`
		Allowed   bool   `json:"allowed"`
		PatchType string `json:"patchType,omitempty"`
		Patch     string `json:"patch,omitempty"`
	} `json:"response"`
}

// patch is FILE's JSON patch, base64-encoded once for every answer; empty without -patch.
var patch string

func admit(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 8<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var in review
	if err := json.Unmarshal(body, &in); err != nil || in.Request == nil {
		http.Error(w, "not an AdmissionReview", http.StatusBadRequest)
		return
	}
	var out answer
	out.APIVersion, out.Kind = in.APIVersion, in.Kind
	out.Response.UID, out.Response.Allowed = in.Request.UID, true
	if patch != "" {
		out.Response.PatchType, out.Response.Patch = "JSONPatch", patch
	}
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(&out); err != nil {
		log.Printf("answer: %v", err)
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:9443", "listen address")
	cert := flag.String("cert", "tls.crt", "serving certificate (PEM)")
	key := flag.String("key", "tls.key", "its private key (PEM)")
	patchFile := flag.String("patch", "", "a JSON patch file to answer every review with (default: none)")
	flag.Parse()
	if *patchFile != "" {
		raw, err := os.ReadFile(*patchFile)
		if err != nil {
			log.Fatal(err)
		}
		var ops []map[string]any
		if err := json.Unmarshal(raw, &ops); err != nil {
			log.Fatalf("%s: not a JSON patch: %v", *patchFile, err)
		}
		patch = base64.StdEncoding.EncodeToString(raw)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("POST /", admit)
	log.Fatal(http.ListenAndServeTLS(*addr, *cert, *key, mux))
}
