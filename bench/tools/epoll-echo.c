// A raw TCP echo on 127.0.0.2 and its client, to see what the way a
// server sleeps costs a round trip (doc/measurements.md, "Not the timers").
// Build: gcc -O2 -o /tmp/echo bench/tools/epoll-echo.c
// Run:   /tmp/echo MODE PORT & sleep 0.3; /tmp/echo MODE PORT 20000
// MODE 0: the server sleeps in read; 1: in epoll_wait with a 100 ms
// timeout (as a tokio worker with timers); 2: in epoll_wait without one.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <time.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e6+t.tv_nsec/1e3;}
int main(int argc,char**argv){
  int mode=atoi(argv[1]); int port=atoi(argv[2]);
  if(argc>3){ // client
    int s=socket(AF_INET,SOCK_STREAM,0); struct sockaddr_in a={.sin_family=AF_INET,.sin_port=htons(port)}; inet_pton(AF_INET,"127.0.0.2",&a.sin_addr);
    if(connect(s,(void*)&a,sizeof a)<0){perror("connect");return 1;} int one=1; setsockopt(s,IPPROTO_TCP,TCP_NODELAY,&one,sizeof one);
    char b[64]; int n=atoi(argv[3]); double *v=malloc(n*sizeof(double));
    for(int i=0;i<n;i++){double t=now(); write(s,b,64); int g=0; while(g<64){int r=read(s,b+g,64-g); if(r<=0)return 1; g+=r;} v[i]=now()-t;}
    int cmp(const void*x,const void*y){double d=*(double*)x-*(double*)y; return d<0?-1:d>0;}
    qsort(v,n,sizeof(double),cmp); printf("mode %d p50 %.1f us p99 %.1f us\n",mode,v[n/2],v[n*99/100]); return 0;
  }
  int l=socket(AF_INET,SOCK_STREAM,0); int one=1; setsockopt(l,SOL_SOCKET,SO_REUSEADDR,&one,sizeof one);
  struct sockaddr_in a={.sin_family=AF_INET,.sin_port=htons(port)}; inet_pton(AF_INET,"127.0.0.2",&a.sin_addr);
  if(bind(l,(void*)&a,sizeof a)<0){perror("bind");return 1;} listen(l,4);
  int s=accept(l,0,0); setsockopt(s,IPPROTO_TCP,TCP_NODELAY,&one,sizeof one);
  char b[4096];
  if(mode==0){ for(;;){int r=read(s,b,sizeof b); if(r<=0)return 0; write(s,b,r);} }
  fcntl(s,F_SETFL,O_NONBLOCK); int ep=epoll_create1(0); struct epoll_event e={.events=EPOLLIN|EPOLLET,.data.fd=s}; epoll_ctl(ep,EPOLL_CTL_ADD,s,&e);
  for(;;){ struct epoll_event ev[4]; epoll_wait(ep,ev,4,mode==1?100:-1);
    for(;;){int r=read(s,b,sizeof b); if(r==0)return 0; if(r<0)break; write(s,b,r);} }
}
