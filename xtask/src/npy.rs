//! NumPy `.npy` files to and from quant tensors.

use anyhow::{Context, Result, bail};
use ndarray::ArrayD;
use ndarray_npy::{ReadNpyExt, WriteNpyExt};
use quant_core::{Tensor, TensorData};
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::Path;

/// Reads a `.npy` file of f32, f64, i32, i64, u8, i8 or bool values.
pub fn read(path: &Path) -> Result<Tensor> {
    fn try_read<T: ndarray_npy::ReadableElement + quant_core::Element>(
        path: &Path,
    ) -> Result<Option<Tensor>> {
        let file = File::open(path).with_context(|| format!("{}", path.display()))?;
        Ok(ArrayD::<T>::read_npy(BufReader::new(file))
            .ok()
            .map(Tensor::from_array))
    }
    type Reader = fn(&Path) -> Result<Option<Tensor>>;
    let readers: [Reader; 7] = [
        try_read::<f32>,
        try_read::<f64>,
        try_read::<i32>,
        try_read::<i64>,
        try_read::<u8>,
        try_read::<i8>,
        try_read::<bool>,
    ];
    for read in readers {
        if let Some(t) = read(path)? {
            return Ok(t);
        }
    }
    bail!(
        "{}: not a .npy file of f32, f64, i32, i64, u8, i8 or bool values",
        path.display()
    )
}

/// Writes a tensor as a `.npy` file.
pub fn write(path: &Path, tensor: &Tensor) -> Result<()> {
    let file = File::create(path).with_context(|| format!("{}", path.display()))?;
    let w = BufWriter::new(file);
    let result = match tensor.data() {
        TensorData::F32(a) => a.write_npy(w),
        TensorData::F64(a) => a.write_npy(w),
        TensorData::I32(a) => a.write_npy(w),
        TensorData::I64(a) => a.write_npy(w),
        TensorData::U8(a) => a.write_npy(w),
        TensorData::I8(a) => a.write_npy(w),
        TensorData::Bool(a) => a.write_npy(w),
    };
    result.with_context(|| format!("{}", path.display()))
}
