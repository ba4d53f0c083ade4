// kvm-probe.c: a hand-built long-mode guest on /dev/kvm, for recording real kvmmmu
// events (traces/formats/kvmmmu.*.txt). Identity-mapped 4 KiB pages; a CPL0 entry IRETs
// to CPL3 code that loads from one user page, INT3s, stores to it, INT3s; each INT3
// handler (a DPL3 gate) does OUT to port 0xE9, which exits to this program.
// Build: cc -O1 -o kvm-probe kvm-probe.c   (root; /dev/kvm)
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#define MEM (16<<20)
static void die(const char*m){perror(m);exit(1);}
int main(void){
  int kvm=open("/dev/kvm",O_RDWR); if(kvm<0)die("open");
  int vm=ioctl(kvm,KVM_CREATE_VM,0); if(vm<0)die("vm");
  uint8_t*mem=mmap(0,MEM,PROT_READ|PROT_WRITE,MAP_SHARED|MAP_ANONYMOUS,-1,0); memset(mem,0,MEM);
  struct kvm_userspace_memory_region r={.slot=0,.guest_phys_addr=0,.memory_size=MEM,.userspace_addr=(uint64_t)mem};
  if(ioctl(vm,KVM_SET_USER_MEMORY_REGION,&r)<0)die("mem");
  int cpu=ioctl(vm,KVM_CREATE_VCPU,0); if(cpu<0)die("vcpu");
  int sz=ioctl(kvm,KVM_GET_VCPU_MMAP_SIZE,0);
  struct kvm_run*run=mmap(0,sz,PROT_READ|PROT_WRITE,MAP_SHARED,cpu,0);
  uint64_t*pml4=(uint64_t*)(mem+0x4000),*pdpt=(uint64_t*)(mem+0x5000),*pd=(uint64_t*)(mem+0x6000),*pt=(uint64_t*)(mem+0x7000);
  pml4[0]=0x5000|7; pdpt[0]=0x6000|7; pd[0]=0x7000|7;
  for(int i=0;i<512;i++) pt[i]=(i*0x1000ull)|3|((i>=0x20&&i<0x40)?4:0); // user 0x20000-0x3ffff
  uint64_t*gdt=(uint64_t*)(mem+0x1000);
  gdt[0]=0; gdt[1]=0x00af9a000000ffffull; gdt[2]=0x00cf92000000ffffull; gdt[3]=0x00cff2000000ffffull; gdt[4]=0x00affa000000ffffull;
  // TSS at 0x3000, limit 0x67
  uint64_t tss=0x3000; gdt[5]=0x67|((tss&0xffffff)<<16)|(0x89ull<<40)|(((tss>>24)&0xff)<<56); gdt[6]=tss>>32;
  *(uint64_t*)(mem+0x3000+4)=0x9000; // rsp0
  // IDT: vector 3 (int3, DPL3) and 14 (#PF) -> handler 0x10000
  uint64_t*idt=(uint64_t*)(mem+0x2000);
  for(int v=0;v<32;v++){uint64_t h=0x10000+v*16; idt[v*2]=(h&0xffff)|(8ull<<16)|((uint64_t)(v==3?0xee:0x8e)<<40)|(((h>>16)&0xffff)<<48); idt[v*2+1]=h>>32;}
  // handlers: each 16 bytes: hlt; jmp $-? just hlt then iretq
  for(int v=0;v<32;v++){uint8_t*c=mem+0x10000+v*16; c[0]=0xe6; c[1]=0xe9; c[2]=0x48; c[3]=0xcf;} // hlt; iretq
  // user code at 0x20000: mov rax,[0x30000]; int3; mov [0x30008],rax; int3; jmp .
  uint8_t uc[]={0x48,0x8b,0x04,0x25,0x00,0x00,0x03,0x00, 0xcc, 0x48,0x89,0x04,0x25,0x08,0x00,0x03,0x00, 0xcc, 0xeb,0xfe};
  memcpy(mem+0x20000,uc,sizeof uc);
  *(uint64_t*)(mem+0x30000)=0x1234;
  // kernel entry at 0x11000: iretq to user: push ss, rsp, rflags, cs, rip
  uint8_t kc[]={0x6a,0x1b, 0x68,0x00,0xf0,0x03,0x00, 0x68,0x02,0x00,0x00,0x00, 0x6a,0x23, 0x68,0x00,0x00,0x02,0x00, 0x48,0xcf};
  memcpy(mem+0x11000,kc,sizeof kc);
  struct kvm_sregs s; ioctl(cpu,KVM_GET_SREGS,&s);
  s.cr3=0x4000; s.cr4=0x620; s.cr0=0x80050033; s.efer=0xd01;
  struct kvm_segment cs={.base=0,.limit=0xffffffff,.selector=8,.type=11,.present=1,.dpl=0,.db=0,.s=1,.l=1,.g=1};
  struct kvm_segment ds={.base=0,.limit=0xffffffff,.selector=16,.type=3,.present=1,.dpl=0,.db=1,.s=1,.l=0,.g=1};
  s.cs=cs; s.ds=s.es=s.fs=s.gs=s.ss=ds;
  s.gdt.base=0x1000; s.gdt.limit=7*8-1; s.idt.base=0x2000; s.idt.limit=32*16-1;
  struct kvm_segment tr={.base=0x3000,.limit=0x67,.selector=0x28,.type=11,.present=1,.s=0};
  s.tr=tr;
  if(ioctl(cpu,KVM_SET_SREGS,&s)<0)die("sregs");
  struct kvm_regs g; memset(&g,0,sizeof g); g.rip=0x11000; g.rsp=0x9000; g.rflags=2;
  if(ioctl(cpu,KVM_SET_REGS,&g)<0)die("regs");
  // Two exits: one per int3 (its handler does OUT); the guest then spins, so stop here.
  for(int i=0;i<2;i++){
    if(ioctl(cpu,KVM_RUN,0)<0)die("run");
    ioctl(cpu,KVM_GET_REGS,&g); ioctl(cpu,KVM_GET_SREGS,&s);
    printf("exit %d rip %llx rax %llx cs %x cr2 %llx\n",run->exit_reason,(unsigned long long)g.rip,(unsigned long long)g.rax,s.cs.selector,(unsigned long long)s.cr2);
    if(run->exit_reason!=KVM_EXIT_IO)break;
  }
  printf("mem[0x30008]=%llx\n",(unsigned long long)*(uint64_t*)(mem+0x30008));
  return 0;
}
