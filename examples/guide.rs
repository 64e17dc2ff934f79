//! The user guide's code (`docs/src`), as a program CI runs
//! (`tests/readme_tour.rs`): each `// readme:<name>` region below is a code
//! block of a guide page, verbatim (less its indentation). Pages also use
//! the regions of `examples/tour.rs` and `ml/examples/readme_ml.rs`.
//! `cargo run --example guide` runs it on an embedded cluster.

fn main() -> prism::Result<()> {
    first::main()?;
    guide::tasks()?;
    guide::objects()?;
    guide::residency()?;
    println!("GUIDE OK");
    Ok(())
}

// Kept as the guide shows it.
#[rustfmt::skip]
mod first {
    // readme:first
    #[prism::remote]
    fn square(x: u64) -> u64 {
        x * x
    }

    pub fn main() -> prism::Result<()> {
        let _cluster = prism::init()?; // an embedded cluster, or PRISM_ADDRESS's
        let refs = (0..100u64).map(square::remote).collect::<prism::Result<Vec<_>>>()?;
        let total: u64 = prism::get_all(&refs)?.into_iter().sum();
        println!("{total}");
        Ok(())
    }
    // readme:end
}

#[rustfmt::skip]
mod guide {
    use std::time::Duration;

    // readme:tasks-fns
    #[prism::remote]
    fn square(x: u64) -> u64 {
        x * x
    }

    #[prism::remote]
    async fn fetch(url: String) -> Vec<u8> {
        url.into_bytes() // async functions too
    }
    // readme:end

    pub fn tasks() -> prism::Result<()> {
        let _cluster = prism::InitOptions::new().num_cpus(2.0).init()?;
        // readme:tasks-call
        let r: prism::ObjectRef<u64> = square::remote(7u64)?;  // returns at once
        assert_eq!(r.get()?, 49);                               // waits for the result
        let page = fetch::remote("prism".to_string())?;
        let nine = square::remote(3u64)?;
        let (ready, pending) = prism::wait(&[r, nine], 2, Some(Duration::from_secs(10)))?;
        assert_eq!((ready.len(), pending.len(), page.get()?.len()), (2, 0, 5));
        // readme:end
        Ok(())
    }

    pub fn objects() -> prism::Result<()> {
        let _cluster = prism::InitOptions::new().num_cpus(2.0).init()?;
        let (rows, cols) = (2usize, 3usize);
        let bytes: Vec<u8> = [1.5f32; 6].iter().flat_map(|f| f.to_le_bytes()).collect();
        // readme:objects
        let r = prism::put(&vec![1u64, 2, 3])?;                      // a value you store yourself
        let t = prism::put_tensor(prism::DType::F32, &[rows, cols], &bytes)?;
        let view = prism::get_tensor(&t)?;                           // zero-copy TensorView
        let floats: &[f32] = view.as_slice::<f32>()?;
        assert_eq!((r.get()?, floats[5], view.shape().to_vec()), (vec![1, 2, 3], 1.5, vec![2, 3]));
        // readme:end
        Ok(())
    }

    #[prism::remote]
    fn score(rows: Vec<u64>) -> u64 {
        rows.iter().sum()
    }

    pub fn residency() -> prism::Result<()> {
        let _cluster = prism::InitOptions::new().num_cpus(1.0).label("region", "in-south").init()?;
        let rows = vec![17u64; 64];
        // readme:residency
        let rule = prism::Residency::new("region", &["in-south", "in-west"]);
        let records = prism::put_resident(&rows, rule.clone())?;   // this node must be inside the rule
        // readme:end
        assert_eq!(records.get()?.len(), 64);
        // readme:residency-task
        let scores = score::options().resident(rule.clone()).remote(&records)?;
        // readme:end
        assert_eq!(scores.get()?, 17 * 64);
        let elsewhere = prism::Residency::new("region", &["eu-west"]);
        assert!(prism::put_resident(&rows, elsewhere).is_err());
        Ok(())
    }
}
