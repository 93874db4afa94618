# volk is compiled into the library. Its global function pointers (vkCreateInstance, ...) and its
# own entry points (volkInitialize, ...) would collide with an application that links the Vulkan
# loader or its own volk, so every such symbol is renamed with a spk__ prefix by a generated header
# that each library file includes before volk.h. Device-level calls go through per-context
# VolkDeviceTable instances; the renamed globals only ever hold loader-level and instance-level
# entry points.
find_path(SOFTPICK_VOLK_DIR volk.c PATHS /usr/include REQUIRED)
set(SOFTPICK_VOLK_SOURCE ${SOFTPICK_VOLK_DIR}/volk.c)
set(_volk_private ${SOFTPICK_GENERATED_DIR}/volk_private.h)
if(NOT EXISTS ${_volk_private} OR ${SOFTPICK_VOLK_DIR}/volk.h IS_NEWER_THAN ${_volk_private})
  file(STRINGS ${SOFTPICK_VOLK_DIR}/volk.h _ptrs REGEX "^extern PFN_vk[A-Za-z0-9_]+ vk[A-Za-z0-9_]+;")
  file(STRINGS ${SOFTPICK_VOLK_DIR}/volk.h _funcs REGEX "^[A-Za-z_ ]+[ *]volk[A-Za-z0-9_]+\\(")
  set(_defs "/* Generated from volk.h: keeps volk's global symbols private to softpick. */\n#pragma once\n")
  foreach(line IN LISTS _ptrs)
    string(REGEX REPLACE "^extern PFN_vk[A-Za-z0-9_]+ (vk[A-Za-z0-9_]+);.*" "\\1" sym "${line}")
    string(APPEND _defs "#define ${sym} spk__${sym}\n")
  endforeach()
  foreach(line IN LISTS _funcs)
    string(REGEX REPLACE "^.*[ *](volk[A-Za-z0-9_]+)\\(.*" "\\1" sym "${line}")
    string(APPEND _defs "#define ${sym} spk__${sym}\n")
  endforeach()
  file(WRITE ${_volk_private} "${_defs}")
endif()
set_source_files_properties(${SOFTPICK_VOLK_SOURCE} PROPERTIES
  COMPILE_OPTIONS "-include;${_volk_private};-Wno-unused-parameter")
add_custom_target(softpick_volk_private DEPENDS ${_volk_private})
