// mpx/mpx.h — everything a program needs from mpx, in one include.
//
//   #include "mpx/mpx.h"
//
//   int square(int x) { return x * x; }
//   MPX_TASK(square);
//
//   int main(int argc, char** argv) {
//     mpx::init(argc, argv);  // spawned processes enter their role here and never return
//     mpx::Pool pool(4);
//     std::vector<int> squares = pool.map(square, std::vector<int>{0, 1, 2, 3});
//   }
#ifndef MPX_MPX_H_
#define MPX_MPX_H_

#include "mpx/actor.h"
#include "mpx/connection.h"
#include "mpx/errors.h"
#include "mpx/future.h"
#include "mpx/manager.h"
#include "mpx/object.h"
#include "mpx/pipeline.h"
#include "mpx/pool.h"
#include "mpx/process.h"
#include "mpx/progress.h"
#include "mpx/queue.h"
#include "mpx/runtime.h"
#include "mpx/shared.h"
#include "mpx/shared_memory.h"
#include "mpx/sync.h"
#include "mpx/task.h"

#endif  // MPX_MPX_H_
