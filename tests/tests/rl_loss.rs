use burn::tensor::{DType, Device, Tensor, TensorData};

#[test]
fn flex_f64_probe() {
    let dev = Device::flex().autodiff();
    let x = Tensor::<2>::from_data((TensorData::new(vec![0.1f64, 0.2, 0.3, 1.0 / 3.0], [2, 2])), (&dev, DType::F64)).require_grad();
    println!("x dtype {:?}", x.dtype());
    let m = Tensor::<2>::from_data(TensorData::new(vec![1.0f64, 0.0, 1.0, 1.0], [2, 2]), (&dev, DType::F64));
    let y = x.clone().exp().mul(m.clone()).clamp(0.0, 1.2).sum_dim(1).div_scalar(3.0);
    let z = y.clone().mean();
    let w = x.clone().max_pair(m.clone()).sum() + x.clone().mul_scalar(0.5).greater_elem(0.05).float().cast(DType::F64).sum() + z.clone();
    println!("y dtype {:?} w {:?}", y.dtype(), w.dtype());
    let g = w.backward();
    let gx = x.grad(&g).unwrap();
    println!("grad dtype {:?} {:?}", gx.dtype(), gx.to_data());
    println!("z {:?}", z.to_data());
    let e = x.clone().exp().into_data();
    println!("{:?}", e);
}
