//! `bitnet-proto`: the `.proto` files and generated code of the public serving API (`bitnet.v1`)
//! and the internal worker API (`bitnet.worker.v1`).
//!
//! Nothing is generated yet: the cluster issue adds the services (compiled with `protox`, no
//! system `protoc`). Until then this crate only names the API versions the rest of the
//! workspace will speak.

/// Package name of the public serving API.
pub const SERVING_PACKAGE: &str = "bitnet.v1";
/// Package name of the internal coordinator ↔ worker API.
pub const WORKER_PACKAGE: &str = "bitnet.worker.v1";

#[cfg(test)]
mod tests {
    #[test]
    fn package_names_are_versioned() {
        assert!(super::SERVING_PACKAGE.ends_with(".v1"));
        assert!(super::WORKER_PACKAGE.ends_with(".v1"));
    }
}
