// Compiled by tests/compile_errors.rs: a type without rkyv's derives used
// as a remote function's argument must fail with Prism's message first.
#[derive(Debug, Clone)]
struct Point {
    x: f64,
    y: f64,
}

#[prism::remote]
fn norm(p: Point) -> f64 {
    (p.x * p.x + p.y * p.y).sqrt()
}

fn main() -> prism::Result<()> {
    let _c = prism::init()?;
    let r = norm::remote(Point { x: 3.0, y: 4.0 })?;
    println!("{}", r.get()?);
    Ok(())
}
