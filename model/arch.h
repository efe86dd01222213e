/* arch.h — built-in architectures for 1x28x28 inputs and 10 classes (Fashion-MNIST).
 *
 * mlp (LeNet-300-100), lenet5, cnn-bn (the teacher), dwsep (the depthwise-separable student);
 * layer lists in docs/architectures.md. Weights are initialised as PyTorch does by default
 * (Kaiming-uniform a=sqrt(5) for conv/dense weights, uniform(+-1/sqrt(fan_in)) biases,
 * BN gamma 1, beta 0, running mean 0, var 1) from `seed`. The input normalisation is set
 * to Fashion-MNIST's: raw pixels 0..255 -> (x/255 - 0.2860) / 0.3530.
 */
#ifndef EFC_MODEL_ARCH_H
#define EFC_MODEL_ARCH_H

#include <stdint.h>

#include "model/model.h"

/* NULL-terminated list of names. */
extern const char *const efc_arch_names[];

/* Build arch `name` with fresh weights. EFC_ENOTFOUND for an unknown name. */
enum efc_status efc_arch_build(const char *name, uint64_t seed, struct efc_model **out);

#endif
