// Compiled by tests/compile_errors.rs: an actor method taking a type
// without rkyv's derives must fail with Prism's message first.
#[derive(Debug, Clone)]
struct Point {
    x: f64,
}

#[prism::actor]
struct Plotter {
    n: u64,
}

#[prism::actor]
impl Plotter {
    fn new() -> Self {
        Plotter { n: 0 }
    }
    fn plot(&mut self, p: Point) -> u64 {
        self.n += p.x as u64;
        self.n
    }
}

fn main() -> prism::Result<()> {
    let _c = prism::init()?;
    let a = Plotter::options().spawn()?;
    println!("{}", a.plot(Point { x: 1.0 })?.get()?);
    Ok(())
}
