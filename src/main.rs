fn main() {
    print!("{}", jpki_access::api::crds_yaml().expect("CRDs serialise"));
}
