// slimgraph-run: run a slimgraph library with the TVM runtime alone (no Python on the device).
//
//   slimgraph-run LIBRARY.so MANIFEST OUT_DIR [REPEAT]
//
// MANIFEST has one line per input: `DTYPE DIM0xDIM1x... FILE` (raw little-endian data, C order;
// `-` for the dims of a scalar).
// Each output i is written to OUT_DIR/output<i>.bin, and OUT_DIR/outputs.txt gets a line
// `DTYPE DIMS` for it. With REPEAT > 0 the model runs REPEAT more times and the median
// latency is printed as `latency_ms <value>`.
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace ffi = tvm::ffi;

struct AlignedAlloc {  // 64-byte aligned host memory for the input tensors
  void AllocData(DLTensor* tensor) {
    size_t bytes = (tensor->dtype.bits * tensor->dtype.lanes + 7) / 8;
    for (int i = 0; i < tensor->ndim; ++i) bytes *= tensor->shape[i];
    tensor->data = std::aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
  }
  void FreeData(DLTensor* tensor) { std::free(tensor->data); }
};

static DLDataType ParseDtype(const std::string& name) {
  struct Prefix { const char* text; uint8_t code; };
  for (Prefix p : {Prefix{"float", kDLFloat}, Prefix{"uint", kDLUInt}, Prefix{"int", kDLInt}}) {
    std::string prefix(p.text);
    if (name.rfind(prefix, 0) == 0) {
      return DLDataType{p.code, static_cast<uint8_t>(std::stoi(name.substr(prefix.size()))), 1};
    }
  }
  if (name == "bool") return DLDataType{kDLBool, 8, 1};
  throw std::runtime_error("unsupported dtype '" + name + "'");
}

static std::string DtypeName(DLDataType dtype) {
  switch (dtype.code) {
    case kDLFloat: return "float" + std::to_string(dtype.bits);
    case kDLUInt: return "uint" + std::to_string(dtype.bits);
    case kDLInt: return "int" + std::to_string(dtype.bits);
    case kDLBool: return "bool";
    default: return "code" + std::to_string(dtype.code);
  }
}

static size_t Bytes(const DLTensor* tensor) {
  size_t bytes = (tensor->dtype.bits * tensor->dtype.lanes + 7) / 8;
  for (int i = 0; i < tensor->ndim; ++i) bytes *= tensor->shape[i];
  return bytes;
}

static ffi::Tensor ReadInput(const std::string& line) {
  std::istringstream fields(line);
  std::string dtype, dims, path;
  fields >> dtype >> dims >> path;
  std::vector<int64_t> shape;
  std::stringstream dim_list(dims);
  for (std::string dim; dims != "-" && std::getline(dim_list, dim, 'x');) shape.push_back(std::stoll(dim));
  ffi::Tensor tensor = ffi::Tensor::FromNDAlloc(AlignedAlloc(), ffi::ShapeView(shape.data(), shape.size()),
                                                ParseDtype(dtype), DLDevice{kDLCPU, 0});
  std::ifstream file(path, std::ios::binary);
  const DLTensor* raw = tensor.GetDLTensorPtr();
  if (!file.read(static_cast<char*>(raw->data), Bytes(raw))) {
    throw std::runtime_error("input file '" + path + "' is shorter than " + dtype + "[" + dims + "]");
  }
  return tensor;
}

static void WriteOutputs(const ffi::Any& result, const std::string& out_dir) {
  std::vector<ffi::Tensor> outputs;
  if (auto tensor = result.try_cast<ffi::Tensor>()) {
    outputs.push_back(*tensor);
  } else if (auto items = result.try_cast<ffi::Array<ffi::Any>>()) {
    for (const ffi::Any& item : *items) outputs.push_back(item.cast<ffi::Tensor>());
  } else {
    throw std::runtime_error("main returned neither a tensor nor a tuple of tensors");
  }
  std::ofstream listing(out_dir + "/outputs.txt");
  for (size_t i = 0; i < outputs.size(); ++i) {
    const DLTensor* raw = outputs[i].GetDLTensorPtr();
    std::ofstream file(out_dir + "/output" + std::to_string(i) + ".bin", std::ios::binary);
    file.write(static_cast<const char*>(raw->data), Bytes(raw));
    listing << DtypeName(raw->dtype) << " ";
    for (int d = 0; d < raw->ndim; ++d) listing << (d ? "x" : "") << raw->shape[d];
    if (raw->ndim == 0) listing << "-";
    listing << "\n";
  }
}

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: slimgraph-run LIBRARY.so MANIFEST OUT_DIR [REPEAT]\n";
    return 2;
  }
  try {
    ffi::Module library = ffi::Module::LoadFromFile(argv[1]);
    ffi::Module vm = library->GetFunction("vm_load_executable").value()().cast<ffi::Module>();
    // device type, device id, allocator (2 = pooled), as tvm.runtime.vm.VirtualMachine does
    vm->GetFunction("vm_initialization").value()(static_cast<int>(kDLCPU), 0, 2);
    ffi::Function run = vm->GetFunction("main").value();

    std::vector<ffi::Tensor> inputs;
    std::ifstream manifest(argv[2]);
    for (std::string line; std::getline(manifest, line);) {
      if (!line.empty()) inputs.push_back(ReadInput(line));
    }
    std::vector<ffi::AnyView> args(inputs.begin(), inputs.end());
    ffi::Any result;
    run.CallPacked(args.data(), static_cast<int32_t>(args.size()), &result);
    WriteOutputs(result, argv[3]);

    int repeat = argc > 4 ? std::atoi(argv[4]) : 0;
    std::vector<double> runs_ms;
    for (int i = 0; i < repeat; ++i) {
      auto start = std::chrono::steady_clock::now();
      run.CallPacked(args.data(), static_cast<int32_t>(args.size()), &result);
      runs_ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
    }
    if (!runs_ms.empty()) {
      std::sort(runs_ms.begin(), runs_ms.end());
      std::printf("latency_ms %.4f\n", runs_ms[runs_ms.size() / 2]);
    }
  } catch (const std::exception& error) {
    std::cerr << "slimgraph-run: " << error.what() << "\n";
    return 1;
  }
  return 0;
}
