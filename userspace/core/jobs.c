// SPDX-License-Identifier: MIT
/*
 * Jobs off the loop (jobs.h): one thread, a queue in (mutex and condition variable) and a
 * queue out whose eventfd wakes the loop. One thread, because the jobs are rare and long (a
 * policy compile) and a 2-core machine gains nothing from two at once.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/jobs.h"
#include "core/log.h"
#include "core/loop.h"

#define JOBS_NICE 10

struct sl_jobs {
	struct sl_loop *loop;
	int efd; /* written by the thread when a job is done */
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct sl_job *in, **in_tail; /* waiting to run */
	struct sl_job *out, **out_tail; /* run, waiting for done() */
	int stop;
};

static void *thread_main(void *arg)
{
	struct sl_jobs *j = arg;
	uint64_t one = 1;

	/* Below the loops: a job's long run (a compile, 10 MB of JSON) must not take the CPU from
	 * the requests the loops serve when the cores are busy. Linux: a thread's own nice. */
	if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), JOBS_NICE) == -1)
		sl_warn("jobs: lowering the thread's priority failed: %s", strerror(errno));

	pthread_mutex_lock(&j->mu);
	for (;;) {
		struct sl_job *job;

		while (!j->in && !j->stop)
			pthread_cond_wait(&j->cv, &j->mu);
		if (j->stop)
			break;
		job = j->in;
		j->in = job->next;
		if (!j->in)
			j->in_tail = &j->in;
		pthread_mutex_unlock(&j->mu);
		job->run(job);
		pthread_mutex_lock(&j->mu);
		job->next = NULL;
		*j->out_tail = job;
		j->out_tail = &job->next;
		if (write(j->efd, &one, sizeof(one)) == -1 && errno != EAGAIN)
			sl_err("jobs: waking the loop failed: %s", strerror(errno));
	}
	pthread_mutex_unlock(&j->mu);
	return NULL;
}

/* Takes the finished jobs (the lock held briefly) and runs their completions. */
static void drain(struct sl_jobs *j, int cancelled)
{
	struct sl_job *job;

	pthread_mutex_lock(&j->mu);
	job = j->out;
	j->out = NULL;
	j->out_tail = &j->out;
	pthread_mutex_unlock(&j->mu);
	while (job) {
		struct sl_job *next = job->next;

		job->cancelled = cancelled;
		job->done(job);
		job = next;
	}
}

static void efd_cb(struct sl_loop *loop, int fd, void *arg, unsigned events)
{
	uint64_t n;

	(void)loop;
	(void)events;
	if (read(fd, &n, sizeof(n)) == -1 && errno != EAGAIN)
		sl_err("jobs: reading the eventfd failed: %s", strerror(errno));
	drain(arg, 0);
}

struct sl_jobs *sl_jobs_new(struct sl_loop *loop)
{
	struct sl_jobs *j = calloc(1, sizeof(*j));
	int e;

	if (!j)
		return NULL;
	j->loop = loop;
	j->in_tail = &j->in;
	j->out_tail = &j->out;
	pthread_mutex_init(&j->mu, NULL);
	pthread_cond_init(&j->cv, NULL);
	j->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (j->efd == -1)
		goto fail;
	e = sl_loop_add_fd(loop, j->efd, SL_READ, efd_cb, j);
	if (e) {
		errno = -e;
		goto fail;
	}
	e = pthread_create(&j->thread, NULL, thread_main, j);
	if (e) {
		sl_loop_del_fd(loop, j->efd);
		errno = e;
		goto fail;
	}
	return j;
fail:
	e = errno;
	if (j->efd >= 0)
		close(j->efd);
	pthread_cond_destroy(&j->cv);
	pthread_mutex_destroy(&j->mu);
	free(j);
	errno = e;
	return NULL;
}

void sl_jobs_submit(struct sl_jobs *j, struct sl_job *job)
{
	job->next = NULL;
	job->cancelled = 0;
	pthread_mutex_lock(&j->mu);
	*j->in_tail = job;
	j->in_tail = &job->next;
	pthread_cond_signal(&j->cv);
	pthread_mutex_unlock(&j->mu);
}

void sl_jobs_free(struct sl_jobs *j)
{
	if (!j)
		return;
	pthread_mutex_lock(&j->mu);
	j->stop = 1;
	pthread_cond_signal(&j->cv);
	pthread_mutex_unlock(&j->mu);
	pthread_join(j->thread, NULL);
	/* The ones run end as cancelled too: their submitter is going away. */
	*j->out_tail = j->in;
	if (j->in)
		j->out_tail = j->in_tail;
	j->in = NULL;
	drain(j, 1);
	sl_loop_del_fd(j->loop, j->efd);
	close(j->efd);
	pthread_cond_destroy(&j->cv);
	pthread_mutex_destroy(&j->mu);
	free(j);
}
