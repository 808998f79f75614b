#include "watcher.h"

#include "errors.h"

namespace ivshmem {

void Watcher::Init(Napi::Env env, Napi::Object exports, AddonData* data) {
  Napi::Function ctor = DefineClass(env, "Watcher",
                                    {
                                        InstanceMethod<&Watcher::Start>("start"),
                                        InstanceMethod<&Watcher::Stop>("stop"),
                                        InstanceMethod<&Watcher::Ref>("ref"),
                                        InstanceMethod<&Watcher::Unref>("unref"),
                                        InstanceMethod<&Watcher::HasRef>("hasRef"),
                                        InstanceAccessor<&Watcher::GetActive>("active"),
                                        InstanceAccessor<&Watcher::GetClosed>("closed"),
                                        InstanceMethod<&Watcher::Close>("close"),
                                    });
  data->watcherCtor = Napi::Persistent(ctor);
  exports.Set("Watcher", ctor);
}

Watcher::Watcher(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Watcher>(info), Resource(info.Env()) {
  Napi::Env env = info.Env();
  // Everything that can throw comes before uv_poll_init: a handle once initialised must be closed.
  if (!info[0].IsNumber() || !info[1].IsFunction()) throw Napi::TypeError::New(env, "Watcher(fd, callback)");
  fd_ = info[0].As<Napi::Number>().Int32Value();
  callback_ = Napi::Persistent(info[1].As<Napi::Function>());
  context_ = std::make_unique<Napi::AsyncContext>(env, "ivshmem:FdWatcher");
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
    throw Napi::Error::New(env, "napi_get_uv_event_loop failed");
  }
  auto* handle = new Handle{};
  int err = uv_poll_init(loop, &handle->poll, fd_);
  if (err != 0) {
    delete handle;
    throw SystemError(env, -err, "uv_poll_init", FdDetail(fd_));
  }
  handle->owner = this;
  handle->data = data_;
  handle->poll.data = handle;
  handle_ = handle;
  // An open handle holds its JS object, as Node's HandleWrap does: a started watcher that JS no
  // longer references must keep polling, not be collected and stop without a word.
  Napi::ObjectWrap<Watcher>::Ref();
  held_ = true;
}

Watcher::~Watcher() {
  // Backstop only: until close() the watcher holds itself, so this runs only after close() or
  // when the environment tears down.
  CloseHandle();
  Unregister();
}

void Watcher::CloseHandle() {
  if (handle_ == nullptr) return;
  uv_poll_stop(&handle_->poll);
  handle_->owner = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(&handle_->poll), OnClosed);
  handle_->data->HandleClosing();
  handle_ = nullptr;
}

void Watcher::OnClosed(uv_handle_t* raw) {
  auto* handle = static_cast<Handle*>(raw->data);
  AddonData* data = handle->data;
  delete handle;
  data->HandleClosed();
}

void Watcher::Teardown() {
  CloseHandle();
  // No JS runs any more; let go of the references without calling into the engine.
  callback_.SuppressDestruct();
  context_.release();
  held_ = false;
  Unregister();
}

void Watcher::OnPoll(uv_poll_t* poll, int status, int events) {
  auto* handle = static_cast<Handle*>(poll->data);
  if (handle->owner != nullptr) handle->owner->Dispatch(status, events);
}

// A C++ exception must not unwind into libuv (std::terminate): report it the way Node reports a
// throwing callback, as an uncaught exception.
static void Uncaught(napi_env env, const Napi::Error* error, const char* what) noexcept {
  try {
    napi_value value = error != nullptr ? napi_value(error->Value()) : napi_value(Napi::Error::New(env, what).Value());
    napi_fatal_exception(env, value);
  } catch (...) {
    // Nothing is left to report it with.
  }
}

void Watcher::Dispatch(int status, int events) noexcept {
  napi_env env = Env();
  // A raw scope: Napi::HandleScope throws if it cannot open, and nothing may throw out of here.
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  dispatching_ = true;
  try {
    // MakeCallback, not Call: it runs the microtask queue afterwards, as Node's own handles do.
    callback_.MakeCallback(Value(), {Napi::Number::New(env, status), Napi::Number::New(env, events)},
                           *context_);
  } catch (const Napi::Error& e) {
    // A throwing listener becomes an uncaught exception, exactly as from any Node callback.
    Uncaught(env, &e, nullptr);
  } catch (const std::exception& e) {
    Uncaught(env, nullptr, e.what());
  } catch (...) {
    Uncaught(env, nullptr, "unknown C++ exception in a watcher callback");
  }
  dispatching_ = false;
  try {
    if (handle_ == nullptr) ReleaseCallback();  // closed from inside the callback
  } catch (const Napi::Error& e) {
    Uncaught(env, &e, nullptr);
  }
  napi_close_handle_scope(env, scope);
}

// Last: it may leave the object to the collector.
void Watcher::ReleaseCallback() {
  callback_.Reset();
  context_.reset();
  if (held_) {
    held_ = false;
    Napi::ObjectWrap<Watcher>::Unref();
  }
}

Napi::Value Watcher::Start(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (handle_ == nullptr) throw Napi::Error::New(env, "watcher is closed");
  // start(events): 1 = readable (the default), 2 = writable, 3 = both (libuv's UV_* values).
  int events = info[0].IsUndefined() ? UV_READABLE : info[0].As<Napi::Number>().Int32Value();
  events &= UV_READABLE | UV_WRITABLE;
  int err = uv_poll_start(&handle_->poll, events, OnPoll);
  if (err != 0) throw SystemError(env, -err, "uv_poll_start", FdDetail(fd_));
  return env.Undefined();
}

Napi::Value Watcher::Stop(const Napi::CallbackInfo& info) {
  if (handle_ != nullptr) uv_poll_stop(&handle_->poll);
  return info.Env().Undefined();
}

Napi::Value Watcher::Ref(const Napi::CallbackInfo& info) {
  if (handle_ != nullptr) uv_ref(reinterpret_cast<uv_handle_t*>(&handle_->poll));
  return info.Env().Undefined();
}

Napi::Value Watcher::Unref(const Napi::CallbackInfo& info) {
  if (handle_ != nullptr) uv_unref(reinterpret_cast<uv_handle_t*>(&handle_->poll));
  return info.Env().Undefined();
}

Napi::Value Watcher::HasRef(const Napi::CallbackInfo& info) {
  bool ref = handle_ != nullptr && uv_has_ref(reinterpret_cast<uv_handle_t*>(&handle_->poll));
  return Napi::Boolean::New(info.Env(), ref);
}

Napi::Value Watcher::GetActive(const Napi::CallbackInfo& info) {
  bool active = handle_ != nullptr && uv_is_active(reinterpret_cast<uv_handle_t*>(&handle_->poll));
  return Napi::Boolean::New(info.Env(), active);
}

Napi::Value Watcher::GetClosed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), handle_ == nullptr);
}

Napi::Value Watcher::Close(const Napi::CallbackInfo& info) {
  CloseHandle();
  // The async context is still in use while the callback runs; Dispatch releases it then.
  if (!dispatching_) ReleaseCallback();
  Unregister();
  return info.Env().Undefined();
}

}  // namespace ivshmem
