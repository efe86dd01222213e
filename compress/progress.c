/* progress.c — training progress on stderr: on a TTY one bar per epoch redrawn in place
 * (at most 10 times a second), otherwise plain lines (every 10 % of an epoch and at its end).
 */
#include <stdio.h>
#include <unistd.h>

#include "common/efc_time.h"
#include "compress/grad.h"

void efc_progress_init(struct efc_progress *p, int mode, int32_t epochs, int64_t per_epoch)
{
    p->mode = mode == 0 ? 0 : (isatty(2) ? 1 : 2);
    p->epochs = epochs;
    p->per_epoch = per_epoch > 0 ? per_epoch : 1;
    p->t_start = efc_time_s();
    p->t_epoch = p->t_start;
    p->t_last = 0.0;
    p->last_decile = 0;
}

static void fmt_eta(double s, char *buf, size_t n)
{
    if (s < 0.0 || s > 1e7)
        s = 0.0;
    long t = (long)(s + 0.5);
    snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
}

void efc_progress_update(struct efc_progress *p, int32_t epoch, int64_t done, float loss,
                         float acc)
{
    if (p->mode == 0)
        return;
    double now = efc_time_s();
    if (done == 0)
        p->t_epoch = now;
    double el = now - p->t_epoch;
    double ips = el > 0.0 ? (double)done / el : 0.0;
    int64_t total_left = (int64_t)(p->epochs - epoch) * p->per_epoch - done;
    char eta[32];
    fmt_eta(ips > 0.0 ? (double)total_left / ips : -1.0, eta, sizeof(eta));
    double frac = (double)done / (double)p->per_epoch;
    if (p->mode == 1) {
        if (now - p->t_last < 0.1 && done < p->per_epoch)
            return;
        p->t_last = now;
        char bar[31];
        int fill = (int)(frac * 30.0);
        for (int i = 0; i < 30; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[30] = '\0';
        fprintf(stderr, "\repoch %d/%d [%s] %3.0f%% loss %.4f acc %5.2f%% %6.0f img/s ETA %s ",
                epoch + 1, p->epochs, bar, frac * 100.0, loss, acc * 100.0, ips, eta);
        fflush(stderr);
        return;
    }
    int dec = (int)(frac * 10.0);
    if (done == 0)
        p->last_decile = 0;
    if (dec > p->last_decile && dec < 10) {
        p->last_decile = dec;
        fprintf(stderr, "epoch %d/%d %3d%% loss %.4f acc %.2f%% %.0f img/s ETA %s\n", epoch + 1,
                p->epochs, dec * 10, loss, acc * 100.0, ips, eta);
    }
}

void efc_progress_epoch_end(struct efc_progress *p, int32_t epoch, float loss, float acc,
                            float val_acc, double img_per_s)
{
    if (p->mode == 0)
        return;
    double now = efc_time_s();
    char eta[32], val[32] = "";
    int64_t left = (int64_t)(p->epochs - epoch - 1) * p->per_epoch;
    fmt_eta(img_per_s > 0.0 ? (double)left / img_per_s : -1.0, eta, sizeof(eta));
    if (val_acc >= 0.0f)
        snprintf(val, sizeof(val), " val %.2f%%", val_acc * 100.0);
    fprintf(stderr, "%sepoch %d/%d loss %.4f acc %.2f%%%s %.0f img/s %.1fs ETA %s%s\n",
            p->mode == 1 ? "\r\033[K" : "", epoch + 1, p->epochs, loss, acc * 100.0, val,
            img_per_s, now - p->t_start, eta, "");
    fflush(stderr);
}
