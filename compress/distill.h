/* distill.h — knowledge distillation from a teacher's soft targets (distill.c). */
#ifndef EFC_COMPRESS_DISTILL_H
#define EFC_COMPRESS_DISTILL_H

#include <stdint.h>

#include "model/dataset.h"
#include "model/model.h"

struct efc_distill_opts {
    const struct efc_dataset *train; /* labelled */
    const char *student;             /* built-in architecture (model/arch.h) */
    float t;                         /* temperature > 0 */
    float alpha;                     /* weight of the soft term, [0, 1] */
    int32_t epochs;
    float lr;      /* <= 0: the trainer's default (1e-3, Adam) */
    int32_t batch; /* <= 0: 128 */
    uint64_t seed; /* student weights and shuffling; 0: 1 */
    int32_t progress;
};

/* Train a fresh `student` on o->train against the teacher's tempered outputs (see distill.c).
 * *student_out: efc_model_free. teacher_train_acc (may be NULL): the teacher's accuracy on
 * the training set, computed on the way. Errors: EFC_EINVAL (unknown student, shapes or class
 * counts that do not match, no labels), EFC_ENOMEM, or the trainer's. */
enum efc_status efc_distill(const struct efc_model *teacher, const struct efc_distill_opts *o,
                            struct efc_model **student_out, float *teacher_train_acc);

/* The soft term for one batch: teacher rows tlogits[idx[i]] (n_classes each), student logits
 * [batch][n_classes]. dlogits holds the hard (CE) gradient on entry and the combined one on
 * return: (1 - alpha) * dCE + alpha * T * (softmax(s/T) - softmax(t/T)) / batch. Returns
 * alpha * T^2 * mean KL. ps, pt: n_classes floats of scratch. */
float efc_distill_soft_loss(const float *tlogits, const int32_t *idx, const float *logits,
                            int32_t batch, int32_t n_classes, float t, float alpha, float *ps,
                            float *pt, float *dlogits);

/* Load a teacher: path as given, or, when it does not exist and is relative, under base_dir
 * (e.g. the directory of the model being compressed). */
enum efc_status efc_distill_load_teacher(const char *path, const char *base_dir,
                                         struct efc_model **out);

#endif
