/* Probe (not part of the test run): wake-up lateness of clock_nanosleep(TIMER_ABSTIME) against a
 * timerfd waited on with epoll (edge-triggered, as mio registers it), 300-301 us ahead, timer
 * slack 1 ns, pinned to the CPU given. docs/benchmarks.md, fourth session.
 *   gcc -O2 benches/probes/timer_wake.c -o /tmp/timer_wake && /tmp/timer_wake 0
 * Prints p50/p90 lateness in ns: nanosleep | timerfd+epoll | the same again. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <sched.h>
#include <sys/timerfd.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <unistd.h>
#include <stdint.h>
static uint64_t now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1000000000ull+t.tv_nsec;}
static int cmp(const void*a,const void*b){uint64_t x=*(uint64_t*)a,y=*(uint64_t*)b;return x<y?-1:x>y;}
#define N 3000
uint64_t A[N],B[N],C[N];
int main(int argc,char**argv){
 cpu_set_t s;CPU_ZERO(&s);CPU_SET(atoi(argv[1]),&s);sched_setaffinity(0,sizeof s,&s);
 prctl(PR_SET_TIMERSLACK,1,0,0,0);
 int tfd=timerfd_create(CLOCK_MONOTONIC,TFD_NONBLOCK);int ep=epoll_create1(0);
 struct epoll_event ev={.events=EPOLLIN|EPOLLET};epoll_ctl(ep,EPOLL_CTL_ADD,tfd,&ev);
 for(int i=0;i<N;i++){
  uint64_t d=now()+300000+rand()%1000;struct timespec ts={d/1000000000,d%1000000000};
  clock_nanosleep(CLOCK_MONOTONIC,TIMER_ABSTIME,&ts,0);A[i]=now()-d;
  d=now()+300000+rand()%1000;
  struct itimerspec it={{0,0},{0,0}};uint64_t rel=d-now();it.it_value.tv_nsec=rel;timerfd_settime(tfd,0,&it,0);
  struct epoll_event e;epoll_wait(ep,&e,1,-1);B[i]=now()-d;uint64_t x;read(tfd,&x,8);
  d=now()+300000+rand()%1000;
  it.it_value.tv_nsec=d-now();timerfd_settime(tfd,TFD_TIMER_ABSTIME*0,&it,0);
  epoll_wait(ep,&e,1,0>1?0:-1);C[i]=now()-d; read(tfd,&x,8);
 }
 qsort(A,N,8,cmp);qsort(B,N,8,cmp);qsort(C,N,8,cmp);
 printf("nanosleep p50 %lu p90 %lu | timerfd+epoll p50 %lu p90 %lu | again %lu %lu (ns)\n",A[N/2],A[N*9/10],B[N/2],B[N*9/10],C[N/2],C[N*9/10]);
}
