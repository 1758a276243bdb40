fn main() {
    println!("{}", sensor::XDP_OBJECT.len());
}
