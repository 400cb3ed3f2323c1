/* SPDX-License-Identifier: MIT */
/*
 * Jobs off the loop: a thread that runs work the loop must not wait for (compiling a big
 * policy), and hands each job back to the loop when it is done (an eventfd the loop watches),
 * where its completion runs like any other callback.
 *
 * Threading: sl_jobs_new(), sl_jobs_submit() and sl_jobs_free() are calls of the thread of
 * the loop given to sl_jobs_new() (sluiced: the main thread), and every job's done() runs
 * there (which may go on by posting to a worker, core/loop.h). A job's run() runs on the jobs
 * thread, one job at a time in submission order, at nice 10 (below the loops): it may block
 * and take long, and it touches only what its submitter handed over (the job owns it from
 * submit to done). Nothing else is shared.
 */
#ifndef SL_JOBS_H
#define SL_JOBS_H

struct sl_loop;
struct sl_jobs;
struct sl_job;

typedef void sl_job_fn(struct sl_job *job);

/* Embedded in the submitter's own struct (sl_container_of() gets it back). */
struct sl_job {
	sl_job_fn *run; /* on the jobs thread */
	sl_job_fn *done; /* on the loop's thread, after run(); also when sl_jobs_free() ends it */
	int cancelled; /* set before done() when the jobs ended first (run() may not have run) */
	struct sl_job *next; /* the queue's */
};

/* A jobs thread whose completions @loop runs. NULL and errno on failure. */
struct sl_jobs *sl_jobs_new(struct sl_loop *loop);
/* Queues @job (its run and done set). From here to done() the job is the queue's. */
void sl_jobs_submit(struct sl_jobs *j, struct sl_job *job);
/* Waits for the job running now, stops the thread, and calls done() of every job not yet
 * completed with cancelled set (those not run never run). Accepts NULL. */
void sl_jobs_free(struct sl_jobs *j);

#endif
