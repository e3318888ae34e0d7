/* Preloaded before libfaketime by the chaos suite's clock-jump scenario (CHAOS.md).
 *
 * glibc's C11 cnd_timedwait calls glibc's internal pthread_cond_timedwait, which libfaketime's
 * wrapper of the public symbol never sees. librdkafka waits with cnd_timedwait until a
 * CLOCK_REALTIME deadline it computes from the (faked) clock, so under a fake offset of +2 h
 * each of its timed waits lasted two hours more: the daemon hung at its first admin request.
 * Going through the public pthread_cond_timedwait lets libfaketime turn the fake deadline
 * into a real one. cnd_t and mtx_t are glibc's pthread types under other names. */
#include <errno.h>
#include <pthread.h>
#include <threads.h>

int cnd_timedwait(cnd_t *restrict cond, mtx_t *restrict mutex,
                  const struct timespec *restrict deadline) {
  int r = pthread_cond_timedwait((pthread_cond_t *)cond, (pthread_mutex_t *)mutex, deadline);
  return r == 0 ? thrd_success : r == ETIMEDOUT ? thrd_timedout : thrd_error;
}
