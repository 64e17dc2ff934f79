//! Embeds libtorch's directory as an rpath so this crate's test and example
//! binaries find `libtorch_cpu.so` without `LD_LIBRARY_PATH`.

fn main() {
    // torch-sys declares `links = "tch"` and exports its library directory.
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath={dir}");
        // Where the `cuda` feature dlopens libtorch_cuda.so from.
        println!("cargo:rustc-env=PRISM_LIBTORCH_LIB={dir}");
    }
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
}
